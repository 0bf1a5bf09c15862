#pragma once
// hearth::partitioner: the pure planner that splits a transformer's blocks over
// home devices (docs/partitioner.md). Include this for the whole public API:
//
//   device_profile.h  DeviceProfile (memory, decode rates, FLOP/s, overhead)
//   link.h, link_table.h  Link, kDefaultLink, LinkTable
//   model_spec.h      ModelSpec, ModelShape, model_spec_from_shape, presets
//   options.h         Objective, Algorithm, PartitionOptions
//   plan.h            StageRange, StageAssignment, Prediction, PartitionPlan, PlanResult
//   planner.h         plan_partition()
//   evaluate.h        assemble_plan(), evaluate_plan(), validate_plan()
//   explain.h         describe_plan(), left-out reasons, infeasibility messages
//   simulator.h       simulate_plan(): discrete-event check of the predictions
//
// Lower-level pieces (cost_model.h, metrics.h, search_space.h, dp_search.h,
// baselines.h) are public too, for tests and benchmarks.

#include "partitioner/device_profile.h"
#include "partitioner/evaluate.h"
#include "partitioner/explain.h"
#include "partitioner/link.h"
#include "partitioner/link_table.h"
#include "partitioner/model_spec.h"
#include "partitioner/options.h"
#include "partitioner/plan.h"
#include "partitioner/planner.h"
#include "partitioner/simulator.h"

// The web chat page served at `/`: one self-contained HTML file (styles and script inline, no
// CDN, no build step), embedded in the binary at build time from gateway/web/index.html.
#pragma once

#include <string_view>

namespace hearth::http {

std::string_view web_page();

}  // namespace hearth::http

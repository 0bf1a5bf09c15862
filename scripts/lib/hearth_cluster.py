"""A local hearth cluster for the scripts that exercise one (load-test, chaos): a head and
daemons on loopback, each on free ports with its own data directory, paired with the head's join
token when CURVE is built in. Python 3 standard library only."""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time


def log(msg, who="hearth"):
    print("%s: %s" % (who, msg), file=sys.stderr, flush=True)


def open_fds(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return None


def rss_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class Cluster:
    def __init__(self, args):
        self.args = args
        self.bin = os.path.abspath(args.bin)
        self.state = os.path.abspath(args.state)
        self.logs = tempfile.mkdtemp(prefix="hearth-load.")
        self.procs = {}
        self.started_with = {}
        self.head = self.url = None

    def start(self, name, *extra):
        self.started_with[name] = extra
        d = os.path.join(self.state, name)
        os.makedirs(d, exist_ok=True)
        ready = os.path.join(self.logs, name + ".ready")
        logf = open(os.path.join(self.logs, name + ".log"), "wb")
        cmd = [os.path.join(self.bin, "hearthd"), "--name", name, "--listen", "127.0.0.1:0", "--no-discovery",
               "--data-dir", d, "--ready-file", ready, "--threads", str(self.args.threads)] + list(extra)
        if self.args.insecure:
            cmd.append("--insecure")
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=logf)
        self.procs[name] = p
        for _ in range(600):
            if os.path.exists(ready) and os.path.getsize(ready) > 0:
                with open(ready) as f:
                    return f.read().split("\n")
            if p.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError("hearthd %s did not start; log:\n%s" % (name, self.tail(name)))

    def tail(self, name, n=20):
        try:
            with open(os.path.join(self.logs, name + ".log"), "rb") as f:
                return b"\n".join(f.read().splitlines()[-n:]).decode("utf-8", "replace")
        except OSError:
            return ""

    def cli(self, *argv, timeout=120, stdin=None):
        """`hearth --head HEAD argv...` as the head's owner, not checked: (exit code, stdout, stderr)."""
        env = dict(os.environ, HEARTH_DATA_DIR=os.path.join(self.state, "head"))
        try:
            r = subprocess.run([os.path.join(self.bin, "hearth"), "--head", self.head] + list(argv), capture_output=True,
                               text=True, env=env, timeout=timeout, input=stdin)
        except subprocess.TimeoutExpired:
            return 124, "", "timed out after %d s" % timeout
        return r.returncode, r.stdout, r.stderr

    def hearth(self, head, *argv):
        # The CLI authenticates (CURVE) with the keys of the data directory it is given: the head's.
        env = dict(os.environ, HEARTH_DATA_DIR=os.path.join(self.state, "head"))
        return subprocess.run([os.path.join(self.bin, "hearth"), "--head", head] + list(argv), check=True,
                              capture_output=True, text=True, env=env)

    def join_args(self):
        """--token TOKEN where hearthd pairs devices with the head (CURVE), nothing for older builds."""
        help_text = subprocess.run([os.path.join(self.bin, "hearthd"), "--help"], capture_output=True, text=True).stdout
        if "--token" not in help_text or self.args.insecure:
            return []
        env = dict(os.environ, HEARTH_DATA_DIR=os.path.join(self.state, "head"))
        token = subprocess.run([os.path.join(self.bin, "hearth"), "token"], check=True, capture_output=True, text=True,
                               env=env).stdout.strip()
        return ["--token", token]

    def up(self):
        a = self.args
        os.makedirs(self.state, exist_ok=True)
        model = a.model
        split = a.split
        if not model:
            model = os.path.join(self.state, "random-q8.gguf")
            if not os.path.exists(model):
                log("making a random-weight model " + model)
                subprocess.run([os.path.join(self.bin, "hearth"), "mkmodel", "--out", model, "--preset", "tiny",
                                "--dim", "512", "--layers", "6", "--heads", "8", "--kv-heads", "4", "--ffn", "1408",
                                "--ctx", "1024", "--type", "q8_0", "--seed", "1"], check=True, capture_output=True)
            split = split or "head:2,a:2,b:2"
        lines = self.start("head", "--head", "--http", "127.0.0.1:0")
        head, url = lines[0].strip(), lines[1].strip()
        self.head, self.url = head, url
        join = self.join_args()
        for name in ("a", "b"):
            d = os.path.join(self.state, name)
            os.makedirs(d, exist_ok=True)
            prof = os.path.join(d, "profile.json")
            if not os.path.exists(prof):  # one machine: measure it once
                shutil.copy(os.path.join(self.state, "head", "profile.json"), prof)
            self.start(name, "--join", head, *join)
        for _ in range(100):
            out = self.hearth(head, "devices", "--json").stdout
            if out.count('"alive": true') >= 3:
                break
            time.sleep(0.1)
        launch = ["launch", "--model", model, "--ctx", str(a.ctx), "--streams", str(a.streams)]
        if split:
            launch += ["--split", split]
        kv_type = getattr(a, "kv_type", "")
        if kv_type:
            launch += ["--kv-type", kv_type]
        log("launching %s (%s, --streams %d%s)" % (os.path.basename(model), split or "planned", a.streams,
                                                   ", --kv-type " + kv_type if kv_type else ""))
        self.hearth(head, *launch)
        return url

    def kill(self, name, sig=signal.SIGKILL):
        p = self.procs[name]
        p.send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            p.wait(timeout=15)

    def restart(self, name):
        """Starts `name` again with the arguments it was first started with (it must have ended)."""
        return self.start(name, *self.started_with[name])

    def wait_alive(self, n, seconds=20):
        """Until the head lists `n` devices alive; returns whether it did."""
        for _ in range(int(seconds * 10)):
            if self.hearth(self.head, "devices", "--json").stdout.count('"alive": true') >= n:
                return True
            time.sleep(0.1)
        return False

    def pids(self):
        return {n: p.pid for n, p in self.procs.items()}

    def alive(self):
        return {n: p.poll() is None for n, p in self.procs.items()}

    def down(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(self.logs, ignore_errors=True)


# ---------------------------------------------------------------- the run


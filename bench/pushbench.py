#!/usr/bin/env python3
"""Push benchmarks: devpop against `git http-backend` behind lighttpd, measured in one run.

Both servers run on this machine, serve the same starting repo and are pushed to by the same
git client. The baseline repos carry a no-op pre-receive hook; devpop's carry devpop's real hook
(which validates the pushed section.config.json). Pushes to the two are interleaved (and the
order alternates every round) so machine drift hits both alike.

Usage: bench/run [--pushes N] [--clients N] [--rounds N] [--big-mb N]   (see bench/run)
Prints a Markdown report on stdout.
"""

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEVPOP = os.path.join(ROOT, "target", "release", "devpop")

GIT_ENV = dict(
    os.environ,
    GIT_CONFIG_NOSYSTEM="1",
    GIT_CONFIG_GLOBAL="/dev/null",
    GIT_TERMINAL_PROMPT="0",
    GIT_AUTHOR_NAME="bench",
    GIT_AUTHOR_EMAIL="bench@example.com",
    GIT_COMMITTER_NAME="bench",
    GIT_COMMITTER_EMAIL="bench@example.com",
)


def git(cwd, *args, check=True):
    return subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, check=check, capture_output=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # any HTTP answer means it is up
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"server at {url} did not come up")


class Devpop:
    def __init__(self, work):
        self.data = os.path.join(work, "devpop-data")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            # The memory run pushes one large file: allow it (the default refuses files over 100M).
            [DEVPOP, "serve", "--data", self.data, "--listen", f"127.0.0.1:{self.port}", "--max-blob-bytes", "4G"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=dict(os.environ, DEVPOP_LOG="warn"),
        )
        self.proc.stdout.readline()

    def create(self, name):
        subprocess.run(
            [DEVPOP, "app", "create", "1", name, name, "--data", self.data, "--origin", "origin.example.com"],
            check=True,
            capture_output=True,
        )
        return f"{self.url}/account/1/application/{name}/{name}.git"

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait()


class Lighttpd:
    """git http-backend as CGI behind lighttpd, streaming request and response bodies."""

    def __init__(self, work):
        self.root = os.path.join(work, "baseline-repos")
        os.makedirs(self.root)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        backend = os.path.join(git(ROOT, "--exec-path").stdout.decode().strip(), "git-http-backend")
        conf = os.path.join(work, "lighttpd.conf")
        with open(os.path.join(ROOT, "bench", "lighttpd.conf")) as f:
            template = f.read()
        values = {"WORK": work, "PORT": str(self.port), "BACKEND": backend, "ROOT": self.root,
                  "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        for name, value in values.items():
            template = template.replace(f"@{name}@", value)
        with open(conf, "w") as f:
            f.write(template)
        self.proc = subprocess.Popen(["lighttpd", "-D", "-f", conf], stderr=subprocess.DEVNULL)
        wait_http(self.url + "/")

    def create(self, name, seed_url):
        """A bare repo with the same first commit as devpop's app `name`, and a no-op hook."""
        path = os.path.join(self.root, f"{name}.git")
        git(self.root, "clone", "-q", "--bare", seed_url, path)
        git(path, "config", "http.receivepack", "true")
        hook = os.path.join(path, "hooks", "pre-receive")
        with open(hook, "w") as f:
            f.write("#!/bin/sh\nexit 0\n")
        os.chmod(hook, 0o755)
        return f"{self.url}/git/{name}.git"

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


class Work:
    """A clone that makes one small commit per push."""

    def __init__(self, parent, name, url, touch=("counter.txt",)):
        self.dir = os.path.join(parent, name)
        git(parent, "clone", "-q", url, self.dir)
        self.n = 0
        self.touch = touch

    def push_once(self):
        self.n += 1
        for rel in self.touch:
            with open(os.path.join(self.dir, rel), "a") as f:
                f.write(f"# change {self.n}\n")
            git(self.dir, "add", rel)
        git(self.dir, "commit", "-q", "-m", f"change {self.n}")
        start = time.perf_counter()
        r = git(self.dir, "push", "-q", "origin", "HEAD:Production", check=False)
        elapsed = time.perf_counter() - start
        return elapsed, r.returncode == 0, r.stderr.decode(errors="replace")


def validate_cost(devpop, tmp, runs=40):
    """Median wall time of `devpop validate` on the sample application with 0, 1 and 2 modules:
    what validation costs, and what each sandboxed validate.sh adds."""
    sample = os.path.join(ROOT, "tests", "fixtures", "repos", "sample-application")
    import json
    with open(os.path.join(sample, "section.config.json")) as f:
        config = json.load(f)
    out = {}
    for n in (0, 1, 2):
        d = os.path.join(tmp, f"validate-{n}")
        shutil.copytree(sample, d)
        config_n = dict(config, proxychain=config["proxychain"][:n])
        with open(os.path.join(d, "section.config.json"), "w") as f:
            json.dump(config_n, f)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            subprocess.run([DEVPOP, "validate", d, "--env", "Production", "--data", devpop.data], check=True, capture_output=True)
            times.append((time.perf_counter() - start) * 1000)
        out[n] = statistics.median(times)
    return out


def pct(values, p):
    values = sorted(values)
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def latency(devpop, base, tmp, pushes, name="lat", content=None, touch=("counter.txt",), pause=0.1):
    """Interleaved incremental pushes, each changing the files `touch`; `content` (a folder)
    replaces the tree in the first one. After each push, `pause` seconds (a person does not
    push 25 times a second): what a server does after answering (devpop's deployment) happens
    then, instead of during the other server's measured push."""
    d = Work(tmp, f"{name}-devpop", devpop.create(name), touch)
    b = Work(tmp, f"{name}-base", base.create(name, f"{devpop.url}/account/1/application/{name}/{name}.git"), touch)
    for w in (d, b):  # warm-up, and the content under test
        if content:
            shutil.copytree(content, w.dir, dirs_exist_ok=True)
            git(w.dir, "add", "-A")
        w.push_once()
    times = {"devpop": [], "baseline": []}
    for i in range(pushes):
        order = [("devpop", d), ("baseline", b)]
        if i % 2:
            order.reverse()
        for name, w in order:
            t, ok, err = w.push_once()
            if not ok:
                raise SystemExit(f"{name} push failed: {err}")
            times[name].append(t * 1000)
            time.sleep(pause)
    return times


def tree_cpu_ms(pid):
    """CPU time of a process and of every child it has waited for (and theirs): utime, stime,
    cutime, cstime from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) * 1000 / os.sysconf("SC_CLK_TCK")


def throughput(devpop, base, tmp, clients, rounds, repeats=2):
    """32 clients push `rounds` times each, to their own repos; the servers take turns in ABBA
    order, `repeats` times, so drift in the machine's speed hits both alike. Also returns each
    server's CPU per push (its process and the git processes under it), read around each turn."""
    works = {"devpop": [], "baseline": []}
    for i in range(clients):
        name = f"c{i}"
        durl = devpop.create(name)
        works["devpop"].append(Work(tmp, f"tp-devpop-{i}", durl))
        works["baseline"].append(Work(tmp, f"tp-base-{i}", base.create(name, durl)))
    pushes = {"devpop": 0, "baseline": 0}
    seconds = {"devpop": 0.0, "baseline": 0.0}
    errors = {"devpop": [], "baseline": []}
    cpu = {"devpop": 0.0, "baseline": 0.0}
    pids = {"devpop": devpop.proc.pid, "baseline": base.proc.pid}
    order = []
    for r in range(repeats):
        order += ["devpop", "baseline"] if r % 2 == 0 else ["baseline", "devpop"]
    for target in order:
        lock = threading.Lock()

        def client(w):
            for _ in range(rounds):
                _, ok, err = w.push_once()
                if not ok:
                    with lock:
                        errors[target].append(err)

        threads = [threading.Thread(target=client, args=(w,)) for w in works[target]]
        cpu_before = tree_cpu_ms(pids[target])
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds[target] += time.perf_counter() - start
        pushes[target] += clients * rounds
        time.sleep(0.5)  # work a server finishes after answering (devpop's deployments) counts too
        cpu[target] += tree_cpu_ms(pids[target]) - cpu_before
    return {t: (pushes[t] / seconds[t], len(errors[t]), errors[t][:1], cpu[t] / pushes[t]) for t in works}


def status_kb(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def memory(devpop, tmp, big_mb):
    w = Work(tmp, "big", devpop.create("big"))
    idle = status_kb(devpop.proc.pid, "VmRSS")
    with open(os.path.join(w.dir, "big.bin"), "wb") as f:
        for _ in range(big_mb):
            f.write(os.urandom(1 << 20))
    git(w.dir, "add", "big.bin")
    git(w.dir, "commit", "-q", "-m", "big")
    # Reset the peak-RSS counter, so VmHWM afterwards is the peak during this push.
    with open(f"/proc/{devpop.proc.pid}/clear_refs", "w") as f:
        f.write("5")
    start = time.perf_counter()
    r = git(w.dir, "push", "-q", "origin", "HEAD:Production", check=False)
    elapsed = time.perf_counter() - start
    if r.returncode != 0:
        raise SystemExit("big push failed: " + r.stderr.decode(errors="replace"))
    peak = status_kb(devpop.proc.pid, "VmHWM")
    return idle, peak, elapsed


def print_latency(title, times):
    print(f"### {title}")
    print()
    print("| server | p50 ms | p95 ms | mean ms |")
    print("|---|---:|---:|---:|")
    for name in ("devpop", "baseline"):
        v = times[name]
        print(f"| {name} | {pct(v, 50):.1f} | {pct(v, 95):.1f} | {statistics.mean(v):.1f} |")
    r50 = pct(times["devpop"], 50) / pct(times["baseline"], 50)
    r95 = pct(times["devpop"], 95) / pct(times["baseline"], 95)
    print(f"| **ratio devpop/baseline** | **{r50:.2f}x** | **{r95:.2f}x** | |")
    print()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pushes", type=int, default=60, help="incremental pushes per server (latency)")
    ap.add_argument("--clients", type=int, default=32, help="concurrent clients (throughput)")
    ap.add_argument("--rounds", type=int, default=5, help="pushes per client (throughput)")
    ap.add_argument("--big-mb", type=int, default=200, help="size of the push for the memory figure")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="devpop-bench-")
    devpop = Devpop(tmp)
    base = Lighttpd(tmp)
    try:
        lat = latency(devpop, base, tmp, args.pushes)
        sample = os.path.join(ROOT, "tests", "fixtures", "repos", "sample-application")
        # Cold: every push changes both modules' config, so both validate.sh run sandboxed.
        lat_cold = latency(devpop, base, tmp, args.pushes, name="cold", content=sample,
                           touch=("cache/default.vcl", "example/server.conf"))
        # Warm: pushes that leave the module folders as they were (validated before).
        lat_warm = latency(devpop, base, tmp, args.pushes, name="warm", content=sample)
        vcost = validate_cost(devpop, tmp)
        tp = throughput(devpop, base, tmp, args.clients, args.rounds)
        idle, peak, big_s = memory(devpop, tmp, args.big_mb)
    finally:
        devpop.stop()
        base.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    git_version = subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip()
    print(f"Machine: {os.cpu_count()} cores; {git_version}; lighttpd {subprocess.run(['lighttpd', '-v'], capture_output=True, text=True).stdout.split()[0].split('/')[1]}")
    print()
    for title, times in (
        (f"Incremental push latency ({args.pushes} pushes each, interleaved)", lat),
        (f"Sample application (2 modules), every push changes both modules' config: both validate.sh run sandboxed ({args.pushes} pushes each)", lat_cold),
        (f"Sample application (2 modules), pushes that leave the module folders unchanged: validations remembered ({args.pushes} pushes each)", lat_warm),
    ):
        print_latency(title, times)
    print("Where validation time goes (`devpop validate` on the sample application, median of 40 runs):")
    print()
    print("| modules in the chain | ms | added by the last module |")
    print("|---:|---:|---:|")
    for n in (0, 1, 2):
        added = f"{vcost[n] - vcost[n - 1]:.1f}" if n else "-"
        print(f"| {n} | {vcost[n]:.1f} | {added} |")
    print()
    print(f"### Throughput: {args.clients} concurrent clients, each pushing {args.rounds} times to its own repo; the servers take turns (ABBA), twice each")
    print()
    print("| server | pushes/s | errors | server CPU per push (ms) |")
    print("|---|---:|---:|---:|")
    for name in ("devpop", "baseline"):
        rate, errs, sample, cpu_ms = tp[name]
        print(f"| {name} | {rate:.1f} | {errs} | {cpu_ms:.1f} |")
        if sample:
            print(f"<!-- first {name} error: {sample[0].strip()[:300]} -->")
    print(f"| **ratio devpop/baseline** | **{tp['devpop'][0] / tp['baseline'][0]:.2f}x** | | **{tp['devpop'][3] / tp['baseline'][3]:.2f}x** |")
    print()
    print("Server CPU per push: the server's process and every git process under it (utime + stime +")
    print("cutime + cstime from /proc/PID/stat), read before and after each turn.")
    print()
    print("### devpop memory")
    print()
    print("| what | RSS |")
    print("|---|---:|")
    print(f"| idle (after the runs above) | {idle / 1024:.1f} MB |")
    print(f"| peak while receiving a {args.big_mb} MB push ({big_s:.1f} s) | {peak / 1024:.1f} MB |")


if __name__ == "__main__":
    main()

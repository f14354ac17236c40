"""Config change on N Flask units vs 1, side by side, under load (stdlib only).

  TWELVE_BIN=... TWELVE_HOME=... TWELVE_INGRESS_PORT=... \
    python3 bench/deploy/config_units.py SRC [REPS] [UNITS]

Deploys SRC as `one` (1 unit) and `many` (UNITS units, default 3). For each rep and each
app, alternating: a client loop requests the app through the ingress (one request at a
time), `twelve config APP greeting=xK` runs (it returns once the change is live), then
every unit is polled until it serves "xK from"; prints the time from the command to the
last unit serving it, the command's own time, and the failed requests during it.
"""
import http.client
import json
import os
import subprocess
import sys
import threading
import time

TWELVE = os.environ["TWELVE_BIN"]
INGRESS = int(os.environ["TWELVE_INGRESS_PORT"])


def get(port, host=None, timeout=5.0):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", "/", headers={"Host": host} if host else {})
        r = c.getresponse()
        return r.status, r.read().decode("utf-8", "replace")
    except (OSError, http.client.HTTPException):
        return None, None
    finally:
        c.close()


def ports(app):
    out = subprocess.run([TWELVE, "status", app, "--format", "json"],
                         capture_output=True, text=True, check=True)
    a = json.loads(out.stdout)["apps"][0]
    return [int(u["address"].rsplit(":", 1)[1]) for u in a["units"]]


class Load(threading.Thread):
    def __init__(self, app):
        super().__init__(daemon=True)
        self.host = f"{app}.localhost:{INGRESS}"
        self.stop = False
        self.ok = self.failed = 0

    def run(self):
        while not self.stop:
            st, _ = get(INGRESS, self.host)
            if st == 200:
                self.ok += 1
            else:
                self.failed += 1
            time.sleep(0.005)


def change(app, value, n):
    load = Load(app)
    load.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    subprocess.run([TWELVE, "config", app, f"greeting={value}"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t_cmd = time.monotonic() - t0
    while True:
        ps = ports(app)
        if len(ps) == n and all((get(p)[1] or "").startswith(f"{value} from") for p in ps):
            break
        if time.monotonic() - t0 > 180:
            sys.exit(f"{app}: {value} not live within 180 s")
        time.sleep(0.02)
    t_live = time.monotonic() - t0
    time.sleep(0.3)
    load.stop = True
    load.join()
    return t_live, t_cmd, load.ok, load.failed


def main():
    src = sys.argv[1]
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    units = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    for app, n in (("one", 1), ("many", units)):
        subprocess.run([TWELVE, "deploy", src, app, "-n", str(n)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = {"one": [], "many": []}
    for k in range(reps):
        for app, n in (("one", 1), ("many", units)):
            r = change(app, f"x{k}{app}", n)
            rows[app].append(r)
            print(f"  {app} ({n} unit(s)) rep {k + 1}: live {r[0]:.2f} s, command {r[1]:.2f} s,"
                  f" {r[2]} requests, {r[3]} failed", file=sys.stderr)
    print("| config change live on | median | min | max | requests failed / sent |")
    print("|---|---|---|---|---|")
    for app, n in (("one", 1), ("many", units)):
        live = sorted(r[0] for r in rows[app])
        sent = sum(r[2] + r[3] for r in rows[app])
        failed = sum(r[3] for r in rows[app])
        print(f"| {n} unit(s) | {live[len(live) // 2]:.2f} s | {live[0]:.2f} s |"
              f" {live[-1]:.2f} s | {failed} / {sent} |")


if __name__ == "__main__":
    main()

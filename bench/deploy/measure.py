"""Timing helpers for bench/deploy/run.sh (stdlib only, run with /usr/bin/python3).

  measure.py deploy APP SRC          twelve deploy SRC APP --no-wait, then poll until the
                                     unit (address from the status) answers 200 at /, the
                                     ingress URL does, and the unit's gunicorn does (port
                                     from its gunicorn.conf.py); prints
                                     "cmd_ms unit_ms ingress_ms gunicorn_ms"
  measure.py floor PORT CWD CMD...   start CMD in CWD, poll 127.0.0.1:PORT/ until 200;
                                     prints "ms", leaves the pid in $FLOOR_PIDFILE
  measure.py config APP VALUE N      twelve config APP greeting=VALUE, poll every 20 ms
                                     until N units serve "VALUE from ..."; prints "ms"
  measure.py active APP... TIMEOUT   wait until every unit of the apps answers 200
"""
import glob
import http.client
import json
import os
import re
import subprocess
import sys
import time

TWELVE = os.environ["TWELVE_BIN"]
POLL = float(os.environ.get("POLL", "0.01"))


def now():
    return time.monotonic()


def get(hostport, host_header=None, timeout=1.0):
    """(status, body) of GET /, or (None, None) on a connection error."""
    host, port = hostport.rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        headers = {"Host": host_header} if host_header else {}
        c.request("GET", "/", headers=headers)
        r = c.getresponse()
        return r.status, r.read().decode("utf-8", "replace")
    except (OSError, http.client.HTTPException):
        return None, None
    finally:
        c.close()


def status(app):
    out = subprocess.run([TWELVE, "status", app, "--format", "json"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        return None
    try:
        apps = json.loads(out.stdout).get("apps") or []
    except ValueError:
        return None
    for a in apps:
        if a.get("name") == app:
            return a
    return None


def addresses(app):
    a = status(app)
    if not a:
        return None, []
    return a, [u.get("address") for u in a.get("units") or [] if u.get("address")]


def conf_port(app):
    """The port twelve gave the unit's gunicorn, from its config file, or None."""
    for f in glob.glob(os.path.join(os.environ["TWELVE_HOME"], "units", f"{app}-*",
                                    "files", "flask", "gunicorn.conf.py")):
        try:
            m = re.search(r"127\.0\.0\.1:(\d+)", open(f).read())
        except OSError:
            continue
        if m:
            return int(m.group(1))
    return None


def deploy(app, src):
    """Also times when the unit's gunicorn itself first answers (its port read from the
    gunicorn.conf.py twelve writes), to tell the app's start from twelve's bookkeeping."""
    t0 = now()
    subprocess.run([TWELVE, "deploy", src, app, "--no-wait"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t_cmd = now() - t0
    a, addr, port, fails = None, None, None, 0
    t_gun = t_unit = t_ing = None
    deadline = t0 + 120
    while now() < deadline and (t_gun is None or t_unit is None or t_ing is None):
        if t_gun is None:
            port = port or conf_port(app)
            if port and get(f"127.0.0.1:{port}")[0] == 200:
                t_gun = now() - t0
        if t_unit is None:
            # The address from the status; re-read every 20 failures (it could change).
            if addr is None or fails % 20 == 0:
                a, addrs = addresses(app)
                addr = addrs[0] if addrs else None
            if addr and get(addr)[0] == 200:
                t_unit = now() - t0
            else:
                fails += 1
        if t_unit is not None and t_ing is None:
            hostport = a.get("url", "").split("://", 1)[-1].rstrip("/")
            iport = hostport.rsplit(":", 1)[-1]
            if get(f"127.0.0.1:{iport}", host_header=hostport)[0] == 200:
                t_ing = now() - t0
        if t_gun is None or t_unit is None or t_ing is None:
            time.sleep(POLL)
    if t_unit is None or t_ing is None or t_gun is None:
        sys.exit(f"measure.py: {app} not answering within 120 s "
                 f"(gunicorn {t_gun}, unit {t_unit}, ingress {t_ing}; status: {a})")
    print(f"{t_cmd*1000:.0f} {t_unit*1000:.0f} {t_ing*1000:.0f} {t_gun*1000:.0f}")


def floor(port, cwd, cmd):
    t0 = now()
    p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    with open(os.environ["FLOOR_PIDFILE"], "w") as f:
        f.write(str(p.pid))
    deadline = t0 + 60
    while now() < deadline:
        st, _b = get(f"127.0.0.1:{port}")
        if st == 200:
            print(f"{(now()-t0)*1000:.0f}")
            return
        if p.poll() is not None:
            sys.exit(f"measure.py: floor gunicorn exited with {p.returncode}")
        time.sleep(POLL)
    sys.exit("measure.py: floor gunicorn did not answer within 60 s")


def config(app, value, n):
    t0 = now()
    subprocess.run([TWELVE, "config", app, f"greeting={value}"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    want = f"{value} from "
    deadline = t0 + 120
    while now() < deadline:
        _a, addrs = addresses(app)
        if len(addrs) >= n:
            ok = 0
            for addr in addrs:
                st, body = get(addr)
                if st == 200 and body.startswith(want):
                    ok += 1
            if ok >= n:
                print(f"{(now()-t0)*1000:.0f}")
                return
        time.sleep(0.02)
    sys.exit(f"measure.py: {n} units of {app} did not serve {value!r} within 120 s")


def active(apps, timeout):
    deadline = now() + timeout
    pending = list(apps)
    while pending and now() < deadline:
        app = pending[0]
        a, addrs = addresses(app)
        units = (a or {}).get("units") or []
        if (a or {}).get("status") == "active" and units \
                and all(u.get("status") == "active" for u in units) \
                and len(addrs) == len(units) and all(get(x)[0] == 200 for x in addrs):
            pending.pop(0)
            continue
        time.sleep(0.2)
    if pending:
        sys.exit(f"measure.py: not active after {timeout} s: {pending}")


if __name__ == "__main__":
    what, args = sys.argv[1], sys.argv[2:]
    if what == "deploy":
        deploy(args[0], args[1])
    elif what == "floor":
        floor(int(args[0]), args[1], args[2:])
    elif what == "config":
        config(args[0], args[1], int(args[2]))
    elif what == "active":
        active(args[:-1], float(args[-1]))
    else:
        sys.exit(__doc__)

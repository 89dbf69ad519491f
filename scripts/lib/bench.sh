# Shell functions shared by the benchmark scripts (scripts/bench-surge, scripts/bench-tls).
# Source it after setting SERVER_PIDS (the server processes to charge CPU to).

# CPU seconds (user + system) the server processes in SERVER_PIDS have used so far.
server_cpu_seconds() {
    local pid total=0 ticks
    ticks=$(getconf CLK_TCK)
    for pid in "${SERVER_PIDS[@]}"; do
        [[ -r "/proc/$pid/stat" ]] || continue
        # Fields 14 and 15 (utime, stime) after the command name, which may hold spaces.
        total=$(( total + $(sed 's/^.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}') ))
    done
    python3 -c "print($total / $ticks)"
}

# add_server_cpu REPORT BEFORE AFTER: adds the server CPU seconds spent between BEFORE and AFTER
# (from server_cpu_seconds) to a stress JSON report as `server_cpu` {seconds, us_per_op}.
add_server_cpu() {
    python3 - "$1" "$2" "$3" <<'PY'
import json, sys
path, before, after = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
report = json.load(open(path))
ops = report["summary"]["operations"]
seconds = after - before
report["server_cpu"] = {"seconds": round(seconds, 3), "us_per_op": round(seconds * 1e6 / ops, 2) if ops else None}
json.dump(report, open(path, "w"), indent=2)
print(f"   server CPU {seconds:.2f} s, {report['server_cpu']['us_per_op']} us per operation")
PY
}

# The machine line of a results page.
machine_note() {
    echo "machine: $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)), \
$(awk '/MemTotal/ {printf "%d MiB", $2 / 1024}' /proc/meminfo), kernel $(uname -r), \
git $(git describe --always --dirty 2>/dev/null || echo unknown); client and servers share the CPUs"
}

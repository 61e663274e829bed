#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""bench/report.py: turn bench/run's raw result lines into one table.

Reads the raw file (one line per load run: "round=R work=W system=S ...
rps=.. p50_us=.. p99_us=.. failures=.. mbps=.."), takes the median of
each (work, system) over the rounds, computes the ratios to tcpexecd and
to the local spawn ceiling measured in the same rounds, prints the table,
writes it as Markdown, draws the plot with gnuplot (bench/plot.gp) and,
with --docs, replaces the results section of docs/benchmarks.md.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

BEGIN = "<!-- BEGIN bench/run results: generated, replaced by every full run -->"
END = "<!-- END bench/run results -->"

# What bench/run measures, in the order shown; the systems of each item are
# listed so that one that could not run still gets its "n/a" row.
ECHO = ["tcpexecd", "tcpexecd-reuse", "tcpserver", "systemd-socket-activate",
        "xinetd", "socat", "ncat", "zabbix", "nrpe"]
# tcpexecd over TLS 1.3 (a second instance), at 1 and 8 clients only.
TLS = ["tcpexecd-tls-psk", "tcpexecd-tls-psk-resumed", "tcpexecd-tls-cert",
       "tcpexecd-tls-cert-resumed"]
# The TLS rows drawn in the plot: the configurations of the goal.
PLOT_TLS = ["tcpexecd-tls-psk-resumed", "tcpexecd-tls-cert-resumed"]
# The goal for TLS with resumption, as a fraction of the spawn ceiling.
TLS_GOAL = 0.75
WORKS = [
    ("echo-c1", "`echo hello`, fresh connection, 1 client", ECHO + TLS, "req/s"),
    ("echo-c8", "`echo hello`, fresh connection, 8 clients", ECHO + TLS, "req/s"),
    ("echo-c32", "`echo hello`, fresh connection, 32 clients", ECHO, "req/s"),
    ("stream", "1 GB through `cat`", ["tcpexecd", "tcpserver-cat", "socat-cat"], "MB/s"),
    ("e2e", "client program, sequential invocations",
     ["tcpexec", "tcpexec-tls", "tcpexec-tls-resumed", "ssh", "zabbix_get", "check_nrpe"],
     "runs/s"),
    ("ceiling-j1", "local spawn ceiling, 1 spawner", ["spawn"], "spawns/s"),
    ("ceiling-jn", "local spawn ceiling, one spawner per CPU", ["spawn"], "spawns/s"),
]
# The row each work item is compared with, and the ceiling that bounds it.
REFERENCE = {"echo-c1": "tcpexecd", "echo-c8": "tcpexecd", "echo-c32": "tcpexecd",
             "stream": "tcpexecd", "e2e": "tcpexec"}
CEILING = {"echo-c1": "ceiling-j1", "echo-c8": "ceiling-jn", "echo-c32": "ceiling-jn",
           "e2e": "ceiling-j1"}
NOTES = {
    "tcpexecd-reuse": "one connection per client, many requests",
    "ncat": "client does not half-close (see README)",
    "zabbix": "UserParameter, via /bin/sh",
    "nrpe": "v2 packets, no TLS, via /bin/sh",
    "tcpserver-cat": "cat on the socket itself, no relay",
    "socat-cat": "raw bytes, no framing",
    "ssh": "OpenSSH defaults (sntrup761 key exchange); the encrypted peer",
    "check_nrpe": "-n (no TLS)",
    "tcpexecd-tls-psk": "TLS 1.3, pre-shared key (+X25519), full handshake",
    "tcpexecd-tls-psk-resumed": "TLS 1.3, pre-shared key, ticket offered",
    "tcpexecd-tls-cert": "TLS 1.3, ECDSA P-256 certificate verified, full handshake",
    "tcpexecd-tls-cert-resumed": "TLS 1.3, certificate, ticket offered",
    "tcpexec-tls": "--psk-file: a full handshake each run",
    "tcpexec-tls-resumed": "--psk-file --session: resumes the file's ticket",
}


def parse_kv(line):
    out = {}
    for word in line.split():
        if "=" in word:
            k, v = word.split("=", 1)
            out[k] = v
    return out


def read_facts(path):
    facts = {}
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if "=" in line:
                k, v = line.split("=", 1)
                facts[k] = v
    return facts


def fnum(d, k):
    try:
        return float(d.get(k, "nan"))
    except ValueError:
        return float("nan")


def aggregate(raw_path):
    """(work, system) -> {value, p50, p99, failures, requests, rounds}."""
    runs = {}
    with open(raw_path) as f:
        for line in f:
            d = parse_kv(line)
            if "work" not in d or "system" not in d:
                continue
            runs.setdefault((d["work"], d["system"]), []).append(d)
    agg = {}
    for key, rs in runs.items():
        work = key[0]
        metric = "mbps" if work == "stream" else "rps"
        vals = [fnum(r, metric) for r in rs if fnum(r, metric) == fnum(r, metric)]
        ok = [r for r in rs if fnum(r, "p50_us") > 0]
        agg[key] = {
            "value": statistics.median(vals) if vals else 0.0,
            "p50": statistics.median([fnum(r, "p50_us") for r in ok]) if ok else None,
            "p99": statistics.median([fnum(r, "p99_us") for r in ok]) if ok else None,
            "failures": sum(int(fnum(r, "failures")) for r in rs
                            if fnum(r, "failures") == fnum(r, "failures")),
            "requests": sum(int(fnum(r, "requests")) for r in rs
                            if fnum(r, "requests") == fnum(r, "requests")),
            "rounds": len(rs),
            # The slowest request of any round (the 32-client goal).
            "max": max([fnum(r, "max_us") for r in ok]) if ok else None,
            "cpu_us": statistics.median([fnum(r, "cpu_us") for r in rs]) if "cpu_us" in rs[0] else None,
        }
        # tcpexecd's own CPU per request in these runs (bench/run adds it
        # to the lines of tcpexecd's rows; "n/a" runs are left out).
        dcpu = [fnum(r, "daemon_cpu_us") for r in rs if fnum(r, "daemon_cpu_us") >= 0]
        agg[key]["daemon_cpu"] = statistics.median(dcpu) if dcpu else None
        ccpu = [fnum(r, "client_cpu_us") for r in rs if fnum(r, "client_cpu_us") >= 0]
        agg[key]["client_cpu"] = statistics.median(ccpu) if ccpu else None
        # The TLS floor (bench/tlsfloor): each end's CPU, the library.
        scpu = [fnum(r, "server_cpu_us") for r in rs if fnum(r, "server_cpu_us") >= 0]
        agg[key]["server_cpu"] = statistics.median(scpu) if scpu else None
        kd = [fnum(r, "keygen_derive_us") for r in rs if fnum(r, "keygen_derive_us") >= 0]
        agg[key]["keygen_derive"] = statistics.median(kd) if kd else None
        agg[key]["library"] = rs[0].get("library", "")
        # TLS: handshakes, how many resumed a ticket, tickets received.
        if any("tls" in r for r in rs):
            for k in ("handshakes", "resumed", "tickets"):
                agg[key][k] = sum(int(fnum(r, k)) for r in rs if fnum(r, k) >= 0)
    return agg


def fmt_value(v, unit):
    if v >= 100:
        return "%.0f %s" % (v, unit)
    if v >= 10:
        return "%.1f %s" % (v, unit)
    return "%.2f %s" % (v, unit)


def fmt_ms(us):
    if us is None:
        return "-"
    ms = us / 1000.0
    return "%.0f" % ms if ms >= 100 else "%.1f" % ms if ms >= 10 else "%.2f" % ms


def fmt_ratio(a, b):
    if not b or a is None:
        return "-"
    return "%.2f" % (a / b)


def fmt_cpu(a):
    return "%.0f" % a["daemon_cpu"] if a.get("daemon_cpu") is not None else ""


def note(s, a):
    """The note column; for a run that offered tickets, how many resumed."""
    text = NOTES.get(s, "")
    if a and s.endswith("-resumed") and a.get("handshakes"):
        text += "; %d of %d handshakes resumed (%.0f %%)" % (
            a["resumed"], a["handshakes"], 100.0 * a["resumed"] / a["handshakes"])
    return text


def build_rows(agg, facts):
    rows = []
    for work, label, systems, unit in WORKS:
        ref = agg.get((work, REFERENCE.get(work, "")))
        ceil = agg.get((CEILING.get(work, ""), "spawn"))
        seen = [s for (w, s) in agg if w == work]
        for s in systems + [s for s in seen if s not in systems]:
            a = agg.get((work, s))
            name = s if work not in ("ceiling-j1", "ceiling-jn") else "posix_spawn /bin/echo"
            if a is None:
                why = facts.get("na_" + s)
                if why is None:
                    continue
                rows.append([label, name, "n/a", "", "", "", "", "", "", why])
                continue
            rows.append([
                label, name, fmt_value(a["value"], unit), fmt_ms(a["p50"]), fmt_ms(a["p99"]),
                "%d/%d" % (a["failures"], a["requests"]),
                fmt_ratio(a["value"], ref["value"]) if ref else "-",
                fmt_ratio(a["value"], ceil["value"]) if ceil else "-",
                fmt_cpu(a), note(s, a),
            ])
    return rows


HEAD = ["work", "system", "median", "p50 ms", "p99 ms", "failures", "vs tcpexecd",
        "vs ceiling", "daemon CPU µs/req", "note"]


def table_text(rows):
    widths = [max(len(str(r[i])) for r in rows + [HEAD]) for i in range(len(HEAD))]
    out = []
    for r in [HEAD] + rows:
        out.append("  ".join(str(c).ljust(widths[i]) if i in (0, 1, 9) else
                             str(c).rjust(widths[i]) for i, c in enumerate(r)).rstrip())
    return "\n".join(out)


def table_md(rows):
    out = ["| " + " | ".join(HEAD) + " |",
           "|" + "|".join(["---", "---", "---:", "---:", "---:", "---:", "---:", "---:", "---:",
                           "---"]) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out)


def behind(agg, facts):
    """Plain sentences: where another system beats tcpexecd."""
    lines = []
    for work, label, systems, unit in WORKS:
        refname = REFERENCE.get(work)
        ref = agg.get((work, refname)) if refname else None
        if not ref:
            continue
        for s in systems:
            a = agg.get((work, s))
            # tcpexecd's own variants (kept-open, TLS) are not peers.
            if not a or s.startswith("tcpexec"):
                continue
            if a["failures"] * 100 > a["requests"]:
                continue  # a peer that fails more than 1 % is not "ahead"
            if ref["value"] and a["value"] > ref["value"] * 1.05:
                lines.append("- %s: **%s** does %s, %.2f× %s's %s." % (
                    label, s, fmt_value(a["value"], unit), a["value"] / ref["value"],
                    refname, fmt_value(ref["value"], unit)))
            if (a["p99"] and ref["p99"] and ref["p99"] > a["p99"] * 1.10 and work != "stream"):
                lines.append("- %s: **%s** has a lower p99 latency, %s ms against %s ms." % (
                    label, s, fmt_ms(a["p99"]), fmt_ms(ref["p99"])))
    for work in ("echo-c1", "echo-c8", "echo-c32"):
        a = agg.get((work, "tcpexecd"))
        c = agg.get((CEILING[work], "spawn"))
        if a and c and c["value"]:
            lines.append("- %s: tcpexecd reaches %.0f %% of the local spawn ceiling." % (
                dict((w[0], w[1]) for w in WORKS)[work], 100 * a["value"] / c["value"]))
    lines += behind_tls(agg, facts)
    a = agg.get(("echo-c1", "tcpexecd"))
    if a and a["failures"]:
        lines.append("- tcpexecd had %d failures at 1 client." % a["failures"])
    for work in ("echo-c8", "echo-c32", "stream"):
        a = agg.get((work, "tcpexecd"))
        if a and a["failures"]:
            lines.append("- tcpexecd had %d failed requests in %s." % (a["failures"], work))
    for work in ("echo-c1", "echo-c8"):
        for s in TLS:
            a = agg.get((work, s))
            if a and a["failures"]:
                lines.append("- %s had %d failed requests in %s." % (s, a["failures"], work))
    return lines


def behind_tls(agg, facts):
    """TLS: the goal, the cost against plaintext, resumption, and ssh."""
    lines = []
    labels = dict((w[0], w[1]) for w in WORKS)
    for work in ("echo-c1", "echo-c8"):
        c = agg.get((CEILING[work], "spawn"))
        plain = agg.get((work, "tcpexecd"))
        for s, what in (("tcpexecd-tls-psk-resumed", "a pre-shared key"),
                        ("tcpexecd-tls-cert-resumed", "a certificate")):
            a = agg.get((work, s))
            if not (a and c and c["value"]):
                continue
            frac = a["value"] / c["value"]
            lines.append("- %s: with TLS (%s) and resumption tcpexecd reaches %.0f %% of the "
                         "local spawn ceiling: %s the goal of %.0f %%." % (
                             labels[work], what, 100 * frac,
                             "meets" if frac >= TLS_GOAL else "**below**", 100 * TLS_GOAL))
        for s in ("tcpexecd-tls-psk", "tcpexecd-tls-cert"):
            a = agg.get((work, s))
            if not (a and plain and plain["value"]):
                continue
            extra = ""
            if a.get("daemon_cpu") is not None and plain.get("daemon_cpu") is not None:
                extra = "; tcpexecd's own CPU per request %.0f µs against %.0f µs" % (
                    a["daemon_cpu"], plain["daemon_cpu"])
            lines.append("- %s: %s (a full handshake each time) does %.0f %% of plaintext "
                         "tcpexecd's rate%s." % (labels[work], s, 100 * a["value"] / plain["value"],
                                                 extra))
        cl = [(s, agg[(work, s)]["client_cpu"]) for s in ["tcpexecd"] + TLS
              if (work, s) in agg and agg[(work, s)].get("client_cpu") is not None]
        if len(cl) > 1:
            lines.append("- %s: the load generator itself, on the same cores, used %s of CPU "
                         "per request: TLS slows these rows on the client's side too." % (
                             labels[work], ", ".join("%.0f µs (%s)" % (v, s) for s, v in cl)))
        for s in ("tcpexecd-tls-psk-resumed", "tcpexecd-tls-cert-resumed"):
            a = agg.get((work, s))
            if not (a and a.get("handshakes") and a["resumed"] < 0.9 * a["handshakes"]):
                continue
            why = ""
            if a["tickets"] <= a["handshakes"] - a["resumed"] + a["rounds"] * 8:
                # About one ticket per full handshake, none per resumption.
                why = (": the client uses a ticket once, and tcpexecd sent a new ticket only "
                       "after full handshakes, none after a resumption, so every other "
                       "connection is a full handshake")
            lines.append("- %s: %s resumed only %d of %d handshakes (%d tickets received)%s." % (
                labels[work], s, a["resumed"], a["handshakes"], a["tickets"], why))
    lines += behind_floor(agg, facts)
    ssh = agg.get(("e2e", "ssh"))
    for s in ("tcpexec-tls", "tcpexec-tls-resumed"):
        a = agg.get(("e2e", s))
        if a and ssh and ssh["value"]:
            lines.append("- client programs: `%s` does %s, %.0f× `ssh` (%s), the other "
                         "encrypted client." % (s, fmt_value(a["value"], "runs/s"),
                                                a["value"] / ssh["value"],
                                                fmt_value(ssh["value"], "runs/s")))
    return lines


# The TLS floor's runs (bench/tlsfloor), in the order shown.
FLOOR = [("openssl-psk_dhe_ke", "as tcpexecd: its src/tls.c, X25519 on resumption"),
         ("gnutls-psk_dhe_ke", "the same exchange"),
         ("gnutls-psk_ke", "no key exchange on resumption: no forward secrecy")]


def tls_budget(agg, facts):
    """What the TLS goal leaves over plaintext tcpexecd, per request: time at
    1 client (requests are sequential), CPU time at 8 (the CPUs are the
    limit). None where a figure is missing."""
    def rate(work, system):
        a = agg.get((work, system))
        return a["value"] if a and a["value"] else None

    c1, p1 = rate("ceiling-j1", "spawn"), rate("echo-c1", "tcpexecd")
    cn, p8 = rate("ceiling-jn", "spawn"), rate("echo-c8", "tcpexecd")
    try:
        ncpu = int(facts.get("nproc", ""))
    except ValueError:
        ncpu = 0
    b1 = 1e6 / (TLS_GOAL * c1) - 1e6 / p1 if c1 and p1 else None
    b8 = ncpu * 1e6 / (TLS_GOAL * cn) - ncpu * 1e6 / p8 if cn and p8 and ncpu else None
    return b1, b8


def tls_floor(agg):
    """(system, library, note, server µs, client µs, µs added to plaintext)
    for each floor run, and X25519's share; [] without the runs."""
    plain = agg.get(("tls-floor", "plaintext"))
    if not plain or plain.get("server_cpu") is None:
        return []
    base = plain["server_cpu"] + plain["client_cpu"]
    out = []
    for system, what in FLOOR:
        a = agg.get(("tls-floor", system))
        if a and a.get("server_cpu") is not None and a.get("client_cpu") is not None:
            out.append((system, a["library"], what, a["server_cpu"], a["client_cpu"],
                        a["server_cpu"] + a["client_cpu"] - base))
    x = agg.get(("tls-floor", "x25519"))
    if x and x.get("keygen_derive") is not None:
        out.append(("x25519", x["library"], "X25519 alone: a key made and a secret derived "
                    "at each end", x["keygen_derive"], x["keygen_derive"], 2 * x["keygen_derive"]))
    return out


def tls_costs(agg, facts):
    """The table of what a resumed handshake costs against the goal's budget."""
    rows = tls_floor(agg)
    if not rows:
        return None
    b1, b8 = tls_budget(agg, facts)

    def times(v, b):
        return "%.1f×" % (v / b) if b and b > 0 else "no budget" if b is not None else "n/a"

    out = ["| resumed TLS 1.3 handshake | library | server µs | client µs | added to "
           "plaintext, both ends, µs | vs the budget at 1 client | at 8 clients |",
           "|---|---|---:|---:|---:|---:|---:|"]
    for system, lib, what, sv, cl, added in rows:
        out.append("| %s (%s) | %s | %.0f | %.0f | %.0f | %s | %s |" % (
            system, what, lib, sv, cl, added, times(added, b1), times(added, b8)))
    out.append("")
    out.append("The budget: what 0.75 of the ceiling leaves over plaintext tcpexecd in this "
               "run, %s µs per request at 1 client (time: each request waits for the one "
               "before) and %s µs of CPU per request at 8 clients (both CPUs busy)." % (
                   "%.0f" % b1 if b1 is not None else "n/a",
                   "%.0f" % b8 if b8 is not None else "n/a"))
    return "\n".join(out)


def behind_floor(agg, facts):
    """One sentence: can any library measured meet the TLS goal here?"""
    rows = [r for r in tls_floor(agg) if r[0] != "x25519"]
    b1, b8 = tls_budget(agg, facts)
    if not rows or b1 is None or b8 is None:
        return []
    text = ", ".join("%.0f µs with %s %s" % (r[5], r[1], r[0].split("-", 1)[1]) for r in rows)
    line = ("- TLS with resumption: 0.75 of the ceiling leaves %.0f µs per request over "
            "plaintext at 1 client and %.0f µs of CPU at 8; a resumed handshake with no "
            "network, no command and both ends on one CPU (bench/tlsfloor) already adds %s. "
            % (b1, b8, text))
    fits = [(r, n) for n, b in ((1, b1), (8, b8)) for r in rows if r[5] <= b]
    if fits:
        line += ("Within the budget at this floor: %s; the real TLS rows pay TCP and the "
                 "wake-ups of the other CPU on top (their CPU per request, above)." % ", ".join(
                     "%s (%s) at %d client%s, %.1f× the budget" % (
                         r[0], r[1], n, "s" if n > 1 else "", r[5] / (b1 if n == 1 else b8))
                     for r, n in fits))
    else:
        line += ("**No TLS library measured here fits the goal's budget, not even without "
                 "forward secrecy**: no server-side change can reach it on this machine.")
    return [line]


def goals(agg, facts):
    """The issue's goals, each with this run's value and whether it is met."""
    rows = []

    def row(goal, value, met):
        rows.append((goal, value, "n/a" if met is None else ("met" if met else "**not met**")))

    def get(work, system):
        a = agg.get((work, system))
        return a if a and a["value"] else None

    for work, n in (("echo-c1", 1), ("echo-c8", 8)):
        a, c = get(work, "tcpexecd"), get(CEILING[work], "spawn")
        r = a["value"] / c["value"] if a and c else None
        row("`echo hello` at %d client%s: ≥ 0.90 of the spawn ceiling" % (n, "s" if n > 1 else ""),
            "%.2f" % r if r is not None else "n/a", None if r is None else r >= 0.90)
    for work, n in (("echo-c1", 1), ("echo-c8", 8), ("echo-c32", 32)):
        a, t = get(work, "tcpexecd"), get(work, "tcpserver")
        r = a["value"] / t["value"] if a and t else None
        row("`echo hello` at %d client%s: ≥ 1.10× tcpserver" % (n, "s" if n > 1 else ""),
            "%.2f×" % r if r is not None else "n/a", None if r is None else r >= 1.10)
    a = get("echo-c8", "tcpexecd")
    peers = [(agg[("echo-c8", s)]["p99"], s) for s in ECHO
             if not s.startswith("tcpexec") and get("echo-c8", s) and agg[("echo-c8", s)]["p99"]
             and agg[("echo-c8", s)]["failures"] * 100 <= agg[("echo-c8", s)]["requests"]]
    if a and a["p99"] and peers:
        best, who = min(peers)
        row("p99 at 8 clients: ≤ 0.8× the best peer's", "%s ms, %.2f× %s's %s ms" % (
            fmt_ms(a["p99"]), a["p99"] / best, who, fmt_ms(best)), a["p99"] <= 0.8 * best)
    else:
        row("p99 at 8 clients: ≤ 0.8× the best peer's", "n/a", None)
    a = get("echo-c32", "tcpexecd")
    row("no request slower than 100 ms at 32 clients",
        "slowest %s ms" % fmt_ms(a["max"]) if a and a["max"] else "n/a",
        None if not a or not a["max"] else a["max"] <= 100000)
    for work, n in (("echo-c1", 1), ("echo-c8", 8)):
        c = get(CEILING[work], "spawn")
        for s in PLOT_TLS:
            a = get(work, s)
            r = a["value"] / c["value"] if a and c else None
            row("TLS with resumption (%s), %d client%s: ≥ %.2f of the ceiling" % (
                s, n, "s" if n > 1 else "", TLS_GOAL),
                "%.2f" % r if r is not None else "n/a", None if r is None else r >= TLS_GOAL)
    a = get("stream", "tcpexecd")
    row("1 GB through `cat`: ≥ 1 GB/s", fmt_value(a["value"], "MB/s") if a else "n/a",
        None if not a else a["value"] >= 1000)
    try:
        kb = int(facts.get("mem_worker_after_kb", facts.get("mem_worker_kb")))
        row("idle worker's private memory ≤ 1 MiB", "%d KiB" % kb, kb <= 1024)
    except (TypeError, ValueError):
        row("idle worker's private memory ≤ 1 MiB", "n/a", None)
    try:
        ms = float(facts.get("startup_ms"))
        row("listening within 20 ms of start", "%.2f ms" % ms, ms <= 20)
    except (TypeError, ValueError):
        row("listening within 20 ms of start", "n/a", None)
    out = ["| goal | this run | |", "|---|---|---|"]
    out += ["| %s | %s | %s |" % r for r in rows]
    return "\n".join(out)


def resources(facts, agg):
    def kb(k):
        v = facts.get(k)
        return ("%s KiB" % v) if v and v != "n/a" else "n/a"
    ceil = agg.get(("ceiling-j1", "spawn"))
    rows = [
        ("start-up, exec to \"listening on\" (median of 5)",
         "%s ms" % facts.get("startup_ms", "n/a")),
        ("private memory, master, after start", kb("mem_master_kb")),
        ("private memory, idle worker, after start", kb("mem_worker_kb")),
        ("private memory, master, after the run", kb("mem_master_after_kb")),
        ("private memory, idle worker, after the run", kb("mem_worker_after_kb")),
        ("workers after the run", facts.get("workers_after", "n/a")),
        ("private memory, TLS instance's master, after the run", kb("mem_tls_master_after_kb")),
        ("private memory, TLS instance's idle worker, after the run",
         kb("mem_tls_worker_after_kb")),
        ("CPU per request, master + workers (8 clients)", "%s µs" % facts.get("cpu_daemon_us", "n/a")),
        ("CPU per request, with the `echo` it ran", "%s µs" % facts.get("cpu_total_us", "n/a")),
    ]
    if ceil and ceil.get("cpu_us") is not None:
        rows.append(("CPU per local posix_spawn of `echo` (ceiling, for scale)",
                     "%.0f µs" % ceil["cpu_us"]))
    out = ["| tcpexecd | value |", "|---|---:|"]
    out += ["| %s | %s |" % r for r in rows]
    return "\n".join(out)


def machine(facts):
    keys = [("date", "date"), ("cpu", "CPU"), ("nproc", "CPUs (nproc)"), ("memory", "memory"),
            ("kernel", "kernel"), ("os", "system"), ("revision", "tcpexecd revision"),
            ("rounds", "rounds"), ("counts", "counts per round"),
            ("load_start", "load average at start"), ("load_end", "load average at end")]
    out = ["| | |", "|---|---|"]
    for k, label in keys:
        out.append("| %s | %s |" % (label, facts.get(k, "?")))
    vers = ["%s %s" % (k[len("version_"):], v) for k, v in sorted(facts.items())
            if k.startswith("version_")]
    out.append("| peers | %s |" % ", ".join(vers))
    return "\n".join(out)


def plot(agg, png, here):
    gnuplot = shutil.which("gnuplot")
    if not gnuplot:
        print("report: gnuplot not found, no plot", file=sys.stderr)
        return False
    systems = [s for s in ECHO + PLOT_TLS
               if any((w, s) in agg for w in ("echo-c1", "echo-c8", "echo-c32"))]
    with tempfile.NamedTemporaryFile("w", suffix=".dat", delete=False) as f:
        data = f.name
        for s in systems:
            for c in (1, 8, 32):
                a = agg.get(("echo-c%d" % c, s))
                if a and a["p99"]:
                    f.write("%d %.1f %.3f\n" % (c, a["value"], a["p99"] / 1000.0))
            f.write("\n\n")
        for c, w in ((1, "ceiling-j1"), (8, "ceiling-jn"), (32, "ceiling-jn")):
            a = agg.get((w, "spawn"))
            if a:
                f.write("%d %.1f %.3f\n" % (c, a["value"], (a["p99"] or 0) / 1000.0))
        f.write("\n\n")
    names = " ".join(systems + ["spawn-ceiling"])
    try:
        subprocess.run([gnuplot, "-e", "datafile='%s'; names='%s'; out='%s'" % (data, names, png),
                        os.path.join(here, "plot.gp")], check=True)
    except (subprocess.CalledProcessError, OSError) as e:
        print("report: gnuplot failed: %s" % e, file=sys.stderr)
        return False
    finally:
        os.unlink(data)
    return True


def section(facts, agg, rows, png_name):
    quick = facts.get("quick") == "1"
    parts = [BEGIN, "", "## Results", ""]
    if quick:
        parts += ["*A `--quick` run: small counts, for checking the bench, not for quoting.*", ""]
    # Only the load at the start tells of other work: the load at the end
    # counts the bench's own 32 clients and their commands.
    try:
        load_start = float(facts["load_start"].split()[0])
        ncpu = int(facts.get("nproc", "0"))
    except (KeyError, IndexError, ValueError):
        load_start, ncpu = 0.0, 0
    if ncpu and load_start > ncpu / 2:
        parts += ["**The machine was busy with other work when this run started** (1-minute "
                  "load average %.1f on %d CPUs): the interleaved rounds spread what it took "
                  "over all systems, but the latencies, p99 most of all, are noisier. "
                  "Compare the rows of this run with each other, not with another run."
                  % (load_start, ncpu), ""]
    parts += ["Measured by `bench/run` on %s. Medians of %s interleaved rounds; "
              "\"vs tcpexecd\" divides by tcpexecd's median (by `tcpexec`'s for the client "
              "programs), \"vs ceiling\" by the local `posix_spawn` loop's of the same "
              "rounds (one spawner for 1 client and for the client programs, one per CPU "
              "for 8 and 32 clients). Failures are summed over the rounds. \"daemon CPU\" is "
              "tcpexecd's own CPU time per request (master and workers, without the "
              "command), median over the rounds." %
              (facts.get("date", "?"), facts.get("rounds", "?")), "",
              "### Machine", "", machine(facts), "",
              "### The goals", "",
              "The goals of the benchmark issue, against this run's medians (the "
              "32-client latency goal against the slowest request of any round).", "",
              goals(agg, facts), "",
              "### Throughput and latency", "", table_md(rows), ""]
    if png_name:
        parts += ["![requests per second and p99 latency against the number of clients]"
                  "(%s)" % png_name, ""]
    parts += ["### tcpexecd's own resources", "", resources(facts, agg), ""]
    costs = tls_costs(agg, facts)
    if costs:
        parts += ["### What a resumed TLS handshake costs here", "",
                  "`bench/tlsfloor`: a client and a server thread on one CPU, over AF_UNIX, "
                  "each connection a resumed handshake, a 64-byte request and a 48-byte "
                  "answer; CPU per connection at each end, medians of the rounds, and what "
                  "that adds to the same connections in plaintext. The OpenSSL server is "
                  "tcpexecd's own TLS code. No TCP, no command, no wake-up of another CPU: a "
                  "floor under what the TLS rows above pay.", "", costs, ""]
    elif facts.get("na_tls-floor"):
        parts += ["### What a resumed TLS handshake costs here", "",
                  "n/a: %s" % facts["na_tls-floor"], ""]
    lines = behind(agg, facts)
    parts += ["### Where tcpexecd is behind (computed from this run)", ""]
    parts += lines if lines else ["- Nowhere in this run."]
    parts += ["", END]
    return "\n".join(parts)


def write_docs(path, text):
    old = ""
    if os.path.exists(path):
        with open(path) as f:
            old = f.read()
    if BEGIN in old and END in old:
        new = old[:old.index(BEGIN)] + text + old[old.index(END) + len(END):]
    else:
        new = old.rstrip("\n") + ("\n\n" if old else "# Benchmarks\n\n") + text + "\n"
    with open(path, "w") as f:
        f.write(new)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--raw", required=True)
    ap.add_argument("--facts", required=True)
    ap.add_argument("--out", required=True, help="Markdown results file")
    ap.add_argument("--png", required=True, help="plot file next to --out")
    ap.add_argument("--docs", help="docs/benchmarks.md: its results section is replaced")
    ap.add_argument("--docs-png", help="where the plot goes for --docs")
    args = ap.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))

    facts = read_facts(args.facts)
    agg = aggregate(args.raw)
    rows = build_rows(agg, facts)
    print(table_text(rows))
    print()
    for line in behind(agg, facts):
        print(line.replace("**", ""))
    have_png = plot(agg, args.png, here)
    with open(args.out, "w") as f:
        f.write(section(facts, agg, rows, os.path.basename(args.png) if have_png else None) + "\n")
    if args.docs:
        if have_png and args.docs_png:
            shutil.copyfile(args.png, args.docs_png)
        write_docs(args.docs, section(facts, agg, rows,
                                      os.path.basename(args.docs_png) if have_png and args.docs_png
                                      else None))


if __name__ == "__main__":
    main()

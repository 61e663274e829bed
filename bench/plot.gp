# SPDX-License-Identifier: MIT
# bench/plot.gp: requests/s and p99 latency against the number of clients,
# one line per system. bench/report.py calls it with
#   gnuplot -e "datafile='F'; names='a b c'; out='x.png'" bench/plot.gp
# where F holds one block per name (blocks separated by two blank lines),
# each row "clients requests/s p99_ms"; the last name is the spawn ceiling.
# tcpexecd over TLS (with resumption) is measured at 1 and 8 clients only.
set terminal pngcairo size 1400,600 font "sans,10"
set output out
n = words(names)

# One colour per system, whichever systems are present.
color(s) = s eq "tcpexecd" ? 0xd62728 : s eq "tcpexecd-reuse" ? 0xff7f0e : \
	s eq "tcpserver" ? 0x1f77b4 : s eq "systemd-socket-activate" ? 0x2ca02c : \
	s eq "xinetd" ? 0x9467bd : s eq "socat" ? 0x8c564b : s eq "ncat" ? 0xe377c2 : \
	s eq "zabbix" ? 0x7f7f7f : s eq "nrpe" ? 0xbcbd22 : \
	s eq "tcpexecd-tls-psk-resumed" ? 0x8b0000 : s eq "tcpexecd-tls-cert-resumed" ? 0xc05000 : \
	0x000000
width(s) = s eq "tcpexecd" ? 3 : s[1:12] eq "tcpexecd-tls" ? 2.5 : 1.5
dash(s) = s eq "spawn-ceiling" ? 2 : s eq "tcpexecd-reuse" ? 3 : s[1:12] eq "tcpexecd-tls" ? 4 : 1

set multiplot layout 1,2 title "loopback, /bin/echo hello per fresh connection (medians of the rounds)"
set logscale x 2
set xtics (1, 8, 32)
set xrange [0.8:40]
set xlabel "concurrent clients"
set grid
set key outside right top

set ylabel "requests per second"
set yrange [0:*]
set title "throughput"
plot for [i=1:n] datafile index (i-1) using 1:2 with linespoints \
	lw width(word(names, i)) dt dash(word(names, i)) lc rgb color(word(names, i)) pt 7 \
	title word(names, i)

set logscale y
set yrange [*:*]
set ylabel "p99 latency (ms, log scale)"
set title "99th percentile latency (same colours)"
unset key
plot for [i=1:n-1] datafile index (i-1) using 1:3 with linespoints \
	lw width(word(names, i)) dt dash(word(names, i)) lc rgb color(word(names, i)) pt 7 \
	notitle
unset multiplot

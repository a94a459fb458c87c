// The Go benchmark workload: main -> run -> step -> hot(int), N times, timing only its own
// loop; the same output as hammer.c, so that bench/run reads both alike.
//
// Usage: hammer-go N [LINGER_MS]
// Prints `elapsed_ns=<loop time> calls=<N> sink=<checksum> cpu_ns=<own CPU time>
// tracer_cpu_ns=<CPU time the tracer (parent, or $BENCH_TRACER_PID) used during the loop>`.
//
// hot is a small leaf: Go's compiler gives it no stack check, so the entry probe sits on its
// first instruction, as bpftrace's does; its return is a `ret`, which urec probes with a plain
// uprobe (a uretprobe would crash the runtime: golang/go#22008).
package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

var sink int64

//go:noinline
func hot(x int) int {
	sink += int64(x)
	return x + 1
}

//go:noinline
func step(x int) int { return hot(x) }

//go:noinline
func run(n int) int64 {
	var acc int64
	for i := 0; i < n; i++ {
		acc += int64(step(i))
	}
	return acc
}

// procCPU is the CPU time (user + system) of process pid, in ns; -1 if unknown.
func procCPU(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return -1
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(s[i+2:])
	if len(f) < 13 {
		return -1
	}
	u, e1 := strconv.ParseInt(f[11], 10, 64)
	k, e2 := strconv.ParseInt(f[12], 10, 64)
	if e1 != nil || e2 != nil {
		return -1
	}
	return (u + k) * 10_000_000 // USER_HZ = 100
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintf(os.Stderr, "usage: %s N [LINGER_MS]\n", os.Args[0])
		os.Exit(2)
	}
	n, err := strconv.Atoi(os.Args[1])
	if err != nil || n < 0 {
		fmt.Fprintf(os.Stderr, "hammer-go: bad N %s\n", os.Args[1])
		os.Exit(2)
	}
	tracer := os.Getppid()
	if s := os.Getenv("BENCH_TRACER_PID"); s != "" {
		if t, err := strconv.Atoi(s); err == nil {
			tracer = t
		}
	}
	c0 := procCPU(tracer)
	t0 := time.Now()
	acc := run(n)
	elapsed := time.Since(t0).Nanoseconds()
	c1 := procCPU(tracer)
	var ru syscall.Rusage
	cpu := int64(-1)
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		cpu = ru.Utime.Nano() + ru.Stime.Nano()
	}
	tc := int64(-1)
	if c0 >= 0 && c1 >= 0 {
		tc = c1 - c0
	}
	fmt.Printf("elapsed_ns=%d calls=%d sink=%d cpu_ns=%d tracer_cpu_ns=%d\n", elapsed, n, acc, cpu, tc)
	if len(os.Args) > 2 {
		if ms, err := strconv.Atoi(os.Args[2]); err == nil && ms > 0 {
			time.Sleep(time.Duration(ms) * time.Millisecond)
		}
	}
}

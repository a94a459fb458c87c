// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * urec's BPF programs. One small fixed set serves every probe of a recording; probes are told
 * apart by the attach cookie, which urec sets to the probe id. Never one program per probe:
 * loading and verifying is then paid once, and one uprobe_multi link per binary carries any
 * number of probes (detaching 500 single uprobes takes a minute, one multi link 0.1 s).
 *
 *  - urec_session  (uprobe.session): entry + return probes. The kernel gives each call its own
 *    8-byte session cookie, which holds the entry time: latency is exact under recursion and
 *    needs no map.
 *  - urec_entry    (uprobe.multi): entry-only probes (an offset inside a function).
 *  - urec_return   (uretprobe.multi): %return-only probes.
 *  - urec_entry_single / urec_return_single (uprobe / uretprobe): the fallback when the kernel
 *    refuses multi links; latency through a small per-thread stack of entry times.
 *  - urec_fork (tp_btf/sched_process_fork): adds the children of traced processes to the tgid
 *    filter at fork time, so a child calling the probed code at once is not missed; and gives
 *    a Python process's child its `py_procs` entry (with stacks on).
 *
 * User stacks (-g fp) are walked by the programs themselves (put_fp_stack): the same frames
 * as bpf_get_stack, at a fraction of its cost.
 *
 * Records are written exact-size: built in a per-CPU scratch buffer, then copied with
 * bpf_ringbuf_output; bare records (no arguments, no stack) are reserved and written in
 * place. They are submitted without waking the reader (a wake-up per event costs 3-5 us here,
 * several times the probe itself); the reader polls on a timer, and a forced wake-up happens
 * only once the unread data passes `wakeup_bytes` (looked at every 16th record per CPU, or
 * sooner after `check_bytes` bytes).
 *
 * Sampling (SPEC.md, "Exact at any rate"): when the ring still cannot keep up, each CPU keeps
 * the stacks and args of one call in 2^shift (chosen at random, so that no periodic pattern of
 * calls is aliased), 2^shift following the ring's fill: at each look at the unread size, more
 * than half the ring and grown by a sixteenth of it since the shift last changed raises the
 * shift by one (up to UREC_MAX_SHIFT), less than an eighth lowers it (the gap is hysteresis).
 * A kept event carries its shift (urec_event.weight_shift), and its
 * return event the same; a call sampled out writes nothing to the ring, on either side: the
 * decision lives with the call's pairing state (the session cookie, the Go call's map value),
 * and entry-only or return-only probes decide per event. Calls, returns and latencies are
 * counted in `aggs` and `hist` whatever the decision (`sampled` counts the calls left out).
 * In the default mode (shift 0) this costs one per-CPU load per call and nothing else: the
 * fill is read where the wake-up check already reads it. The single-uprobe fallback programs
 * never sample.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "urec.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* Set by the recorder before load. */
const volatile __u32 self_tgid = 0;       /* urec itself: never traced */
const volatile __u8 filter_tgids = 0;     /* only tgids in `tgids` (-p, -- COMMAND) */
const volatile __u8 filter_cgroup = 0;    /* only tasks in `cgroup_filter`'s cgroup (--cgroup) */
const volatile __u32 stack_depth = UREC_MAX_DEPTH; /* 0: no stacks (-g none) */
const volatile __u64 wakeup_bytes = 1 << 20;
const volatile __u64 ring_bytes = 16 << 20; /* the size of `events` */
const volatile __u64 check_bytes = 1 << 20; /* bytes per CPU between two looks at the fill */
const volatile __u32 hist_bits = 6;       /* sub-bucket bits of the latency histograms */
const volatile __u32 hist_buckets = 2496; /* counters per probe: log_linear::kernel_buckets */
/* `urec top`: only count (aggs, hist); never build or reserve a ring record. */
const volatile __u8 count_only = 0;
/* Python code snapshots ("Python code snapshots" below); 0 only to measure what they cost
 * (UREC_NO_PY_SNAPSHOTS=1): then names depend on the process still living. */
const volatile __u8 py_snapshots = 1;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20);
} events SEC(".maps");

/* Per-probe configuration, indexed by probe id (the cookie). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct urec_probe_cfg);
} probes SEC(".maps");

/* Failed reservations, indexed by probe id * 2 + kind. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

/* Per-probe counts (struct urec_agg), indexed by probe id: per CPU, so no atomics. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct urec_agg);
} aggs SEC(".maps");

/*
 * Latency histograms, `hist_buckets` counters per probe (probe id * hist_buckets + bucket).
 * Shared by the CPUs with atomic adds rather than per CPU: 20 KB per probe per CPU would not
 * fit a glob of thousands of functions. Mappable, so the recorder reads them without a syscall
 * per counter.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} hist SEC(".maps");

/* Traced tgids when filtering. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u8);
} tgids SEC(".maps");

/* --cgroup: the cgroup v2 directory whose tasks (and its descendants') are traced, at key 0. */
struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} cgroup_filter SEC(".maps");

/*
 * The scratch buffer: header and args below 4096; then the Python block (at most
 * 8 + 32 * UREC_PY_MAX_FRAMES bytes, so it ends below 6152); then frames (at most 1032
 * bytes: below 7184) or the dwarf header and pending returns (312 bytes), all below
 * FP_WIN_OFF (7680), where the frame-pointer walk's window and, before it, the Python walk's
 * read windows lie (up to 8192); then up to UREC_MAX_STACK_SIZE bytes of stack copy. The
 * masks are what the verifier needs to see every access in bounds.
 */
#define SCRATCH_SIZE (8192 + UREC_MAX_STACK_SIZE + 8192)
#define OFF_MASK 4095 /* args: every write starts below 4096 and is at most 1032 bytes long */
#define BODY_MASK 8191 /* what follows the args (Python block, frames, dwarf header) */
#define SIZE_MASK 8191
#define HEAD_MASK 8191
#define WAKEUP_CHECK_EVERY 16 /* records per CPU between two looks at the unread size */
#define START_SLACK 64 /* bytes above mm->start_stack still copied */
#define STACK_CHUNKS (UREC_MAX_STACK_SIZE / 4096 + 1) /* pages a copy can touch */
#define STACK_MASK (UREC_MAX_STACK_SIZE - 1)

struct scratch {
	__u8 buf[SCRATCH_SIZE];
};

/*
 * One scratch buffer per CPU, indexed by CPU number (max_entries is set to the number of
 * possible CPUs at load). Not a PERCPU_ARRAY: its values are limited to 32 KiB, and the stack
 * copy alone may take 64 KiB.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch SEC(".maps");

/* Fallback latency: entry times of the pending calls of one thread. */
#define FALLBACK_DEPTH 16
struct tstack {
	__u32 depth;
	__u32 filtered; /* bit d: the pending call at depth d was rejected by the predicate */
	__u64 ts[FALLBACK_DEPTH];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct tstack);
} pending SEC(".maps");

extern __u64 *bpf_session_cookie(void) __ksym __weak;
extern bool bpf_session_is_return(void) __ksym __weak;

/* Per-CPU state of the programs (an array lookup the verifier inlines: no helper call). */
struct cpu_state {
	__u32 traced_tgid; /* the last tgid found in `tgids` on this CPU (0: none) */
	__u32 events;      /* records submitted on this CPU, for WAKEUP_CHECK_EVERY */
	__u64 bytes;       /* bytes submitted on this CPU since the last look at the fill */
	__u32 shift;       /* sampling: one call in 2^shift keeps its events (0: all) */
	__u32 skipped;     /* calls sampled out on this CPU, for WAKEUP_CHECK_EVERY */
	__u64 low_avail;   /* the least unread size this CPU saw since its shift last changed */
	__u64 asked_at;    /* the last wake-up a copy forced for the in-kernel walk (KD_ASK) */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cpu_state);
} cpu_state SEC(".maps");

static __always_inline struct cpu_state *this_cpu(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&cpu_state, &zero);
}

/* Entries are never removed from `tgids`, so a tgid found there once stays traced: the last
 * one found per CPU is remembered, which spares the hash lookup (≈40 ns) on nearly every event
 * of a `-p`/`-- COMMAND` recording. */
static __always_inline bool traced(__u32 tgid)
{
	if (tgid == self_tgid)
		return false;
	/* Before the tgid cache: a task may move between cgroups at any time. 1 = under it;
	 * 0 = not; negative = no cgroup in the map (cannot happen once loaded): not traced. */
	if (filter_cgroup && bpf_current_task_under_cgroup(&cgroup_filter, 0) != 1)
		return false;
	if (filter_tgids) {
		struct cpu_state *c = this_cpu();

		if (c && c->traced_tgid == tgid)
			return true;
		if (!bpf_map_lookup_elem(&tgids, &tgid))
			return false;
		if (c)
			c->traced_tgid = tgid;
	}
	return true;
}

static __always_inline void count_lost(__u32 probe, __u32 kind)
{
	__u32 key = probe * 2 + kind;
	__u64 *n = bpf_map_lookup_elem(&lost, &key);

	if (n)
		*n += 1; /* per-CPU slot: no atomic needed */
}

static __always_inline struct urec_agg *agg_of(__u32 probe)
{
	return bpf_map_lookup_elem(&aggs, &probe);
}

static __always_inline void count_filtered(__u32 probe)
{
	struct urec_agg *a = agg_of(probe);

	if (a)
		a->filtered++; /* per-CPU slot: no atomic needed */
}

static __always_inline void count_call(__u32 probe)
{
	struct urec_agg *a = agg_of(probe);

	if (a)
		a->calls++;
}

/* floor(log2(v)) for v > 0, branch by branch (BPF has no count-leading-zeros). */
static __always_inline __u32 log2_u64(__u64 v)
{
	__u32 r = 0;

	if (v >> 32) { v >>= 32; r += 32; }
	if (v >> 16) { v >>= 16; r += 16; }
	if (v >> 8) { v >>= 8; r += 8; }
	if (v >> 4) { v >>= 4; r += 4; }
	if (v >> 2) { v >>= 2; r += 2; }
	if (v >> 1) r += 1;
	return r;
}

/*
 * A return of a counted call: `returns`, and with a latency its exact stats and its
 * histogram bucket (format/src/log_linear.rs `bucket`, values capped below 2^44 ns).
 * `calls` too for a return-only probe, whose calls are its returns.
 */
static __always_inline void count_return(__u32 probe, bool has_latency, __u64 lat, bool call)
{
	struct urec_agg *a = agg_of(probe);

	if (!a)
		return;
	if (call)
		a->calls++;
	a->returns++;
	if (!has_latency)
		return;
	if (!a->lat_count || lat < a->lat_min)
		a->lat_min = lat;
	if (lat > a->lat_max)
		a->lat_max = lat;
	a->lat_count++;
	a->lat_total += lat;

	__u32 bits = hist_bits & 7;
	__u64 v = lat;
	__u64 idx;

	if (v >= (1ULL << UREC_HIST_TOP_EXP))
		v = (1ULL << UREC_HIST_TOP_EXP) - 1;
	if (v < (1ULL << bits)) {
		idx = v;
	} else {
		__u32 shift = log2_u64(v) - bits;

		idx = ((__u64)(shift + 1) << bits) + ((v >> (shift & 63)) - (1ULL << bits));
	}
	if (idx >= hist_buckets)
		return;
	__u32 key = probe * hist_buckets + (__u32)idx;
	__u64 *n = bpf_map_lookup_elem(&hist, &key);

	if (n)
		__sync_fetch_and_add(n, 1);
}

/* pt_regs as an array of u64, in struct order (abi.rs has the names). */
static __always_inline __u64 reg_value(struct pt_regs *ctx, __s64 idx)
{
	switch (idx) {
	case 0: return ctx->r15;
	case 1: return ctx->r14;
	case 2: return ctx->r13;
	case 3: return ctx->r12;
	case 4: return ctx->bp;
	case 5: return ctx->bx;
	case 6: return ctx->r11;
	case 7: return ctx->r10;
	case 8: return ctx->r9;
	case 9: return ctx->r8;
	case 10: return ctx->ax;
	case 11: return ctx->cx;
	case 12: return ctx->dx;
	case 13: return ctx->si;
	case 14: return ctx->di;
	case 15: return ctx->orig_ax;
	case 16: return ctx->ip;
	case 17: return ctx->cs;
	case 18: return ctx->flags;
	case 19: return ctx->sp;
	case 20: return ctx->ss;
	default: return 0;
	}
}

/* Runs one argument's fetch program; returns false when a user read faulted. */
static __always_inline bool eval_arg(struct pt_regs *ctx, struct urec_arg_cfg *arg, __u64 probe_ip,
				     __u64 *out)
{
	__u64 v = 0;
	__u32 nops = arg->nops;

	for (__u32 i = 0; i < UREC_MAX_OPS; i++) {
		if (i >= nops)
			break;
		struct urec_fetch_op *op = &arg->ops[i];
		__s64 imm = op->imm;

		switch (op->op) {
		case UREC_OP_REG:
			v = reg_value(ctx, imm);
			break;
		case UREC_OP_SPREL:
			if (bpf_probe_read_user(&v, 8, (void *)(ctx->sp + imm)))
				return false;
			break;
		case UREC_OP_IMM:
			v = imm;
			break;
		case UREC_OP_FUNCREL:
			if (!probe_ip)
				return false;
			v = probe_ip + imm;
			break;
		case UREC_OP_DEREF: {
			__u64 x = 0;
			__u32 size = op->size;

			if (size > 8 || size == 0)
				size = 8;
			if (bpf_probe_read_user(&x, size, (void *)(v + imm)))
				return false;
			v = x;
			break;
		}
		case UREC_OP_ADD:
			v += imm;
			break;
		case UREC_OP_ADDREG:
			v += reg_value(ctx, imm) * (op->size & 15);
			break;
		default:
			break;
		}
	}
	*out = v;
	return true;
}

#define ARG_FAULT (1 << 20)

/*
 * Appends one argument at `off` of the scratch buffer; returns the new offset, with ARG_FAULT
 * set when a read faulted. A global (not inlined) function: the verifier checks it once instead
 * of once per argument slot and program, which keeps the programs far below its limits.
 */
__noinline long put_arg(struct pt_regs *ctx, struct urec_arg_cfg *arg, struct scratch *s,
			__u32 off, __u64 probe_ip)
{
	__u64 v = 0;
	bool ok;

	if (!arg || !s)
		return off | ARG_FAULT;
	off &= OFF_MASK;
	__u8 *buf = s->buf;

	if (arg->is_string && arg->nops == 1 && arg->ops[0].op == UREC_OP_COMM) {
		__builtin_memset(buf + off + 8, 0, 16);
		bpf_get_current_comm(buf + off + 8, 16);
		*(__u64 *)(buf + off) = 16;
		return off + 8 + 16;
	}
	ok = eval_arg(ctx, arg, probe_ip, &v);
	if (!arg->is_string) {
		*(__u64 *)(buf + off) = ok ? v : 0;
		return (off + 8) | (ok ? 0 : ARG_FAULT);
	}
	long n = -1;

	if (ok)
		n = bpf_probe_read_user_str(buf + off + 8, UREC_STR_MAX + 2, (void *)v);
	if (n <= 0) {
		*(__u64 *)(buf + off) = 0;
		return (off + 8) | ARG_FAULT;
	}
	__u64 len = n - 1; /* without the NUL */
	__u64 desc = len;

	if (len > UREC_STR_MAX) {
		len = UREC_STR_MAX;
		desc = len | (1ULL << 32);
	}
	*(__u64 *)(buf + off) = desc;
	return off + 8 + ((len + 7) & ~7ULL);
}

/*
 * Evaluates step `i` of the probe's predicate, a comparison: 1 when true, 0 when false or when
 * its operand could not be read. Strings are read into the scratch buffer, which is free
 * until the record is built. Global (not inlined): verified once.
 */
__noinline int pred_cmp(struct pt_regs *ctx, struct urec_probe_cfg *cfg, __u32 i, __u64 probe_ip)
{
	if (!ctx || !cfg)
		return 0;
	struct urec_pred_op *op = &cfg->pred.ops[i & (UREC_MAX_PRED_OPS - 1)];
	struct urec_arg_cfg *arg = &cfg->pred.args[op->arg & (UREC_MAX_PRED_ARGS - 1)];
	__u8 code = op->op;
	__u64 v = 0;

	if (op->str) {
		__u32 cpu = bpf_get_smp_processor_id();
		struct scratch *s = bpf_map_lookup_elem(&scratch, &cpu);
		__u8 *c = (__u8 *)cfg->pred.strs[(op->str - 1) & (UREC_MAX_PRED_STRS - 1)];
		__u32 len = op->str_len;
		bool eq = true;

		if (!s || len >= UREC_PRED_STR)
			return 0;
		__u8 *buf = s->buf;

		if (arg->nops == 1 && arg->ops[0].op == UREC_OP_COMM) {
			bpf_get_current_comm(buf, 16); /* NUL-padded */
			if (len >= 16)
				eq = false;
		} else {
			if (!eval_arg(ctx, arg, probe_ip, &v))
				return 0;
			long n = bpf_probe_read_user_str(buf, UREC_PRED_STR, (void *)v);

			if (n <= 0)
				return 0;
			if (n != len + 1)
				eq = false;
		}
		for (__u32 j = 0; j < UREC_PRED_STR && eq; j++) {
			if (j > len)
				break;
			if (buf[j] != c[j])
				eq = false;
		}
		return code == UREC_PR_EQ ? eq : code == UREC_PR_NE ? !eq : 0;
	}
	if (!eval_arg(ctx, arg, probe_ip, &v))
		return 0;
	v <<= op->shl & 63;
	if (op->is_signed)
		v = (__u64)((__s64)v >> (op->shr & 63));
	else
		v >>= op->shr & 63;

	__u64 k = op->imm;
	bool sg = op->is_signed;

	switch (code) {
	case UREC_PR_EQ: return v == k;
	case UREC_PR_NE: return v != k;
	case UREC_PR_LT: return sg ? (__s64)v < (__s64)k : v < k;
	case UREC_PR_LE: return sg ? (__s64)v <= (__s64)k : v <= k;
	case UREC_PR_GT: return sg ? (__s64)v > (__s64)k : v > k;
	case UREC_PR_GE: return sg ? (__s64)v >= (__s64)k : v >= k;
	default: return 0;
	}
}

/* Whether the probe's predicate accepts this call (see struct urec_pred). Global: verified
 * once for every program that calls it. */
__noinline int pred_pass(struct pt_regs *ctx, struct urec_probe_cfg *cfg, __u64 probe_ip)
{
	__u32 stack = 0;

	if (!ctx || !cfg)
		return 1;
	__u32 n = cfg->npred;

	for (__u32 i = 0; i < UREC_MAX_PRED_OPS; i++) {
		if (i >= n)
			break;
		__u8 code = cfg->pred.ops[i].op;

		if (code == UREC_PR_AND)
			stack = (stack >> 1) & (~1U | (stack & 1));
		else if (code == UREC_PR_OR)
			stack = (stack >> 1) | (stack & 1);
		else
			stack = (stack << 1) | (pred_cmp(ctx, cfg, i, probe_ip) & 1);
	}
	return stack & 1;
}

/* True when the probe has a predicate and it rejects this call (then counted). */
static __always_inline bool rejected(struct pt_regs *ctx, struct urec_probe_cfg *cfg, __u32 probe,
				     __u64 probe_ip)
{
	if (!cfg || !cfg->npred || pred_pass(ctx, cfg, probe_ip))
		return false;
	count_filtered(probe);
	return true;
}

/* Appends the arguments fetched at `at_return` (or all of them); returns the fault mask. */
static __always_inline __u16 fetch_args(struct pt_regs *ctx, struct urec_probe_cfg *cfg,
					struct scratch *s, __u32 *off, __u8 at_return, bool all,
					__u64 probe_ip)
{
	__u16 faults = 0;
	__u32 slot = 0;
	__u32 nargs = cfg->nargs;

	for (__u32 i = 0; i < UREC_MAX_ARGS; i++) {
		if (i >= nargs)
			break;
		struct urec_arg_cfg *arg = &cfg->args[i];

		if (!all && arg->at_return != at_return)
			continue;
		long r = put_arg(ctx, arg, s, *off, probe_ip);

		*off = r & OFF_MASK;
		if (r & ARG_FAULT)
			faults |= 1 << (slot & 15);
		slot++;
	}
	return faults;
}

/*
 * Copies `len` bytes of user stack from `sp` to `soff` in the scratch buffer, page by page;
 * returns a bitmap of the chunks that faulted (left zeroed). Global, so that the verifier
 * checks it once instead of once per path of its callers.
 */
__noinline __u32 copy_stack(struct scratch *s, __u32 soff, __u64 sp, __u64 len)
{
	__u64 head = 4096 - (sp & 4095);
	__u32 holes = 0;
	__u32 i = 1;
	long err;

	if (!s)
		return 0;
	soff &= HEAD_MASK;
	len &= STACK_MASK;
	if (head > len)
		head = len;
	/* Branch-free marks (a branch per page doubles the verifier's paths): the sign bit of
	 * the helper's error marks the chunk, which the helper zeroed. */
	err = bpf_probe_read_user(s->buf + soff, head & 8191, (void *)sp);
	holes |= (__u64)err >> 63;
	__u64 done = head;

	for (; i < STACK_CHUNKS; i++) {
		if (done + 4096 > len)
			break;
		err = bpf_probe_read_user(s->buf + soff + (done & STACK_MASK), 4096,
					  (void *)(sp + done));
		holes |= ((__u64)err >> 63) << i;
		done += 4096;
	}
	if (done < len) {
		err = bpf_probe_read_user(s->buf + soff + (done & STACK_MASK), (len - done) & 4095,
					  (void *)(sp + done));
		holes |= ((__u64)err >> 63) << (i & 31);
	}
	return holes;
}

/*
 * Where each thread's stack ends, for put_dwarf: the mapping (VMA) that held its sp when last
 * looked up. bpf_find_vma takes the mmap lock with a trylock (-EBUSY while another thread of
 * the process maps or unmaps, as malloc does) and writes the lock's cache line, which every
 * thread of the process shares: once per thread, not once per event. Task storage, not a
 * tid-keyed map: freed with its task, so an exited thread leaves nothing behind and a reused
 * tid finds nothing stale.
 */
struct stack_range {
	__u64 mm;    /* the mm it was found in: an exec keeps the task, not the mappings */
	__u64 start; /* the VMA's start (a main stack grows down: sp below it looks again) */
	__u64 end;   /* the VMA's end */
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct stack_range);
} stack_ranges SEC(".maps");

/* bpf_find_vma's callback: the VMA holding sp. */
static long vma_range(struct task_struct *task, struct vm_area_struct *vma, struct stack_range *r)
{
	r->start = vma->vm_start;
	r->end = vma->vm_end;
	return 0;
}

/*
 * The end of the stack mapping that holds `sp` in the current task, from the task's cached
 * range, else looked up (and cached); 0 when the lookup failed (-EBUSY, or sp in no mapping):
 * the caller then copies its cap, and the next event looks again.
 */
static __always_inline __u64 stack_end(__u64 sp, __u64 mm)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct stack_range *r;
	struct stack_range found = {};

	r = bpf_task_storage_get(&stack_ranges, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (r && r->mm == mm && sp >= r->start && sp < r->end)
		return r->end;
	if (bpf_find_vma(task, sp, vma_range, &found, 0) || found.end <= sp)
		return 0;
	if (r) {
		r->mm = mm;
		r->start = found.start;
		r->end = found.end;
	}
	return found.end;
}

/*
 * Appends the dwarf block at `off`: registers, the trampoline address, the pending return
 * instances (innermost first), then the stack from sp upward. Returns the record size.
 *
 * The copy runs from sp to the end of the stack, at most `size` bytes (the probe's
 * urec_probe_cfg.stack_size: --stack-size): a stack within the cap is whole from the first
 * event, and a shallow one costs only what it holds (a fixed-size copy is gigabytes a second
 * of ring traffic at a hot function's rate). The end is that of the mapping holding sp
 * (stack_end: cached per thread), and in the main thread `mm->start_stack` (+ START_SLACK)
 * where that is lower: the main thread's frames all lie below start_stack (where _start found
 * argc), and what is above it (argv, envp, auxv, the strings: kilobytes) is no use to an
 * unwinder. When the mapping cannot be looked up the copy is `size` bytes, and what lies
 * beyond the stack's end faults into holes.
 *
 * bpf_probe_read_user fails as a whole if any byte is unmapped, and cannot fault pages in: a
 * stack page inside a big frame that was never written (bash's yyparse keeps kilobytes of
 * parser stack) is not present. So the copy is read page by page; a page that faults is left
 * zeroed and marked in `holes`, so the unwinder stops only if it needs a value from it
 * (return addresses are always written, so their pages are present).
 *
 * Global (not inlined): verified once for every program that calls it.
 */
__noinline long put_dwarf(struct pt_regs *ctx, struct scratch *s, __u32 off, __u64 leaf,
			  __u32 size)
{
	if (!s)
		return 0;
	off &= BODY_MASK;
	__u8 *buf = s->buf;
	struct urec_dwarf *d = (struct urec_dwarf *)(buf + off);
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	struct xol_area *area = BPF_CORE_READ(mm, uprobes_state.xol_area);
	struct return_instance *ri = BPF_CORE_READ(task, utask, return_instances);
	__u64 sp = ctx->sp;
	__u64 env_end = BPF_CORE_READ(mm, env_end);
	__u32 n = 0;

	d->ip = ctx->ip;
	d->sp = sp;
	d->bp = ctx->bp;
	d->trampoline = area ? BPF_CORE_READ(area, vaddr) : 0;
	d->leaf = leaf;

	__u32 poff = off + sizeof(*d);

	for (__u32 i = 0; i < UREC_MAX_PENDING; i++) {
		if (!ri)
			break;
		struct urec_pending *p = (struct urec_pending *)(buf + ((poff + i * 16) & HEAD_MASK));

		p->slot = BPF_CORE_READ(ri, stack);
		p->ret = BPF_CORE_READ(ri, orig_ret_vaddr);
		ri = BPF_CORE_READ(ri, next);
		n++;
	}
	d->npending = n;

	__u32 soff = (poff + n * 16) & HEAD_MASK;
	__u64 len = size;
	__u64 top = BPF_CORE_READ(mm, start_stack) + START_SLACK;
	__u64 end = stack_end(sp, (__u64)mm);

	if (top > env_end || top <= sp)
		top = env_end;
	if (end && (top <= sp || end < top))
		top = end;
	if (sp < top && top - sp < len)
		len = top - sp;
	len &= STACK_MASK & ~7ULL;
	__u32 holes = copy_stack(s, soff, sp, len);

	d->holes = holes;
	d->_pad = 0;
	d->status = holes ? UREC_D_HOLES : 0;
	if (len && holes == (1U << ((len + (sp & 4095) + 4095) / 4096)) - 1) {
		len = 0; /* every chunk faulted */
		d->status = UREC_D_READ_FAILED;
	}
	d->stack_len = len;

	__u64 size_out = soff + len;

	/* Hides the result's range from clang, which would otherwise drop the caller's bounds
	 * check as always true: the verifier knows nothing of a global function's result and
	 * needs that check. */
	asm volatile("" : "+r"(size_out));
	return size_out;
}

#define FP_CALLER 1          /* entry: [sp] is the second frame */
#define FP_LEAF 2            /* the probed function's address is the first frame */
#define FP_CALLER_READ (1 << 8) /* returned: [sp] was read and stored */
#define USER_TOP 0x00007ffffffff000ULL
#define FP_WINDOW 512        /* bytes above sp read at once (a power of two) */
#define FP_WIN_OFF 7680      /* where the window lies in the scratch buffer (to 8192) */

/* The state of one frame-pointer walk (bpf_loop's context). */
struct fp_walk {
	struct scratch *s;
	struct return_instance *ri; /* next pending uretprobe, innermost first */
	__u64 tramp;                /* the uretprobe trampoline address */
	__u64 fp;
	__u64 sp;
	__u64 wlen;                 /* bytes of the window read */
	__u32 off;                  /* frames start here in the buffer */
	__u32 n;                    /* frames stored */
	__u32 limit;
};

/* Stores one frame, replacing a uretprobe trampoline address by what it hid. */
static __always_inline void fp_store(struct fp_walk *w, __u64 x)
{
	struct scratch *s = w->s;

	if (!s)
		return;
	struct return_instance *ri = w->ri;

	if (ri && x == w->tramp) {
		x = BPF_CORE_READ(ri, orig_ret_vaddr);
		w->ri = BPF_CORE_READ(ri, next);
	}
	*(__u64 *)(s->buf + ((w->off + (w->n & 255) * 8) & SIZE_MASK)) = x;
	w->n++;
}

/* One step of the chain: [fp] is the caller's fp, [fp + 8] the return address. */
static long fp_step(__u64 i, struct fp_walk *w)
{
	struct scratch *s = w->s;
	__u64 fp = w->fp;
	__u64 pair[2];

	/* A NULL frame pointer ends most chains (_start clears %rbp): reading page 0 would fault
	 * just like the kernel's walk does, but a fault costs more than the whole rest of the
	 * walk here, so it is not taken. */
	if (!s || w->n >= w->limit || fp < 4096 || fp > USER_TOP - 16)
		return 1;
	if (fp >= w->sp && fp - w->sp + 16 <= w->wlen) {
		__u64 k = (fp - w->sp) & (FP_WINDOW - 8);
		__u8 *win = s->buf + FP_WIN_OFF;

		pair[0] = *(__u64 *)(win + k);
		pair[1] = *(__u64 *)(win + ((k + 8) & (FP_WINDOW - 8)));
	} else if (bpf_probe_read_user(pair, 16, (void *)fp)) {
		return 1;
	}
	fp_store(w, pair[1]);
	w->fp = pair[0];
	return 0;
}

/*
 * Appends the frame-pointer user stack at `off`; returns the number of frames (low byte) and
 * FP_CALLER_READ. `limit_mode`: frames at most (low 16 bits) and FP_* (above).
 *
 * The kernel's callchain (`bpf_get_stack`) does the same walk for ≈875 ns per 5-frame stack
 * here; this one mirrors perf_callchain_user() frame for frame: ip, then [sp] at an entry the
 * kernel (or urec) fixes up, then the chain from %rbp until a read faults; and like the
 * kernel's fixup_uretprobe_trampoline_entries(), every uretprobe trampoline address in it
 * becomes the return address the pending uretprobe hid, innermost first. One read of the
 * stack above sp serves the innermost frames (a bpf_probe_read_user costs about as much for
 * 512 bytes as for 16); frames outside it are read one by one.
 *
 * Global (not inlined), and the loop is bpf_loop's: verified once, not once per iteration.
 */
__noinline long put_fp_stack(struct pt_regs *ctx, struct scratch *s, __u32 off, __u32 limit_mode,
			     __u64 probe_ip)
{
	__u32 mode = (limit_mode >> 16) & 0xff;
	/* FP_CALLER: the return address is this many bytes above sp (a moved entry site). */
	__u32 caller_off = ((limit_mode >> 24) & 0xff) * 8;
	struct fp_walk w = {};
	long result = 0;

	if (!s || !ctx)
		return 0;
	w.s = s;
	w.off = off & BODY_MASK;
	w.limit = limit_mode & 0xffff;
	if (w.limit > UREC_MAX_DEPTH + 1)
		w.limit = UREC_MAX_DEPTH + 1;
	w.sp = ctx->sp;
	w.fp = ctx->bp;

	struct task_struct *task = bpf_get_current_task_btf();

	w.ri = BPF_CORE_READ(task, utask, return_instances);
	if (w.ri) {
		struct xol_area *area = BPF_CORE_READ(task, mm, uprobes_state.xol_area);

		w.tramp = area ? BPF_CORE_READ(area, vaddr) : 0;
	}
	__u8 *win = s->buf + FP_WIN_OFF;

	w.wlen = FP_WINDOW;
	if (bpf_probe_read_user(win, FP_WINDOW, (void *)w.sp)) {
		__u64 rest = 4096 - (w.sp & 4095); /* the rest of sp's page */

		w.wlen = 0;
		if (rest < FP_WINDOW && !bpf_probe_read_user(win, rest & (FP_WINDOW - 1),
							      (void *)w.sp))
			w.wlen = rest;
	}
	if ((mode & FP_LEAF) && w.n < w.limit) {
		*(__u64 *)(s->buf + w.off) = probe_ip;
		w.n = 1;
	}
	if (w.n < w.limit)
		fp_store(&w, ctx->ip);
	if ((mode & FP_CALLER) && w.n < w.limit) {
		__u64 v = 0;
		bool ok;

		caller_off &= FP_WINDOW * 4 - 8;
		ok = w.wlen >= caller_off + 8;
		if (ok)
			v = *(__u64 *)(win + (caller_off & (FP_WINDOW - 8)));
		else
			ok = !bpf_probe_read_user(&v, 8, (void *)(w.sp + caller_off));
		if (ok) {
			fp_store(&w, v);
			result |= FP_CALLER_READ;
		}
	}
	bpf_loop(UREC_MAX_DEPTH + 1, fp_step, &w, 0);
	return result | (w.n & 255);
}

/*
 * Python frames (issue 33; SPEC.md, "Interpreter frames (Python)"). A process running a known
 * CPython has an entry in `py_procs` (the recorder keeps it: its mappings, forks, execs,
 * exits); an event that captures a stack there also walks the probed thread's own interpreter
 * frame chain (not the GIL holder's: native code such as zlib.crc32 may have released the GIL)
 * and writes the Python block after the args. Without an entry the cost is the one failed
 * lookup, and only for events that capture a stack.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct urec_py_proc);
} py_procs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, UREC_PY_LAYOUTS);
	__type(key, __u32);
	__type(value, struct urec_py_layout);
} py_layouts SEC(".maps");

/* Key 0: nonzero once the recorder has put any process in `py_procs`. An array lookup the
 * verifier inlines (no helper call): until a Python process is met, an event with a stack pays
 * that load, not a failed hash lookup. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} py_active SEC(".maps");

static __always_inline bool python_known(void)
{
	__u32 zero = 0;
	__u32 *on = bpf_map_lookup_elem(&py_active, &zero);

	return on && *on;
}

/* The PyThreadState last found for a thread, so repeated hits skip the list walk; always
 * checked again (its thread_id still the thread's fsbase) before use. LRU: dead threads age
 * out. */
struct py_tstate {
	__u64 ts;         /* 0: the last search found none */
	__u64 runtime;
	__u64 retry_at;   /* with ts 0: search again from this time (bpf_ktime_get_ns) */
};

/* A thread of a Python process with no thread state (a native library's worker calling the
 * probed function) would search the whole list on every event: up to 64 reads, microseconds.
 * After a miss the thread is left native for this long; a thread that becomes a Python thread
 * (PyGILState_Ensure, or a new threading.Thread hit before it bound its state) is found at the
 * next search, so short: its events of those milliseconds at most lack Python frames. */
#define PY_MISS_RETRY_NS 10000000ULL

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct py_tstate);
} py_tstates SEC(".maps");

#define PY_FRAME_WIN FP_WIN_OFF                    /* a frame's bytes, read at once */
#define PY_CODE_WIN (FP_WIN_OFF + UREC_PY_WINDOW)  /* a code object's bytes, read at once */
#define PY_WRITTEN (1 << 20)                       /* put_py wrote a block */
#define PY_HASH_AT PY_CODE_WIN                     /* put_py leaves the stack hash here */

/* The state of the Python walks (bpf_loop's context). */
struct py_walk {
	struct scratch *s;
	__u64 fsbase;  /* the thread's pthread_self(): what PyThreadState.thread_id holds */
	__u64 ts;      /* the thread state searched / found */
	__u64 frame;   /* the next frame to record */
	__u32 off;     /* frames start here in the buffer */
	__u32 n;       /* frames stored */
	__u32 status;  /* UREC_PY_* */
	__u32 found;   /* ts is the thread's */
	struct urec_py_layout *l; /* the map value (not a copy: the stack is small) */
	__u64 hash;    /* the frames' words folded (py_mix): the `py_stacks_named` key */
};

/* The hash of urec.h ("The hashes both sides compute"): abi.rs py_mix is the same function. */
static __always_inline __u64 py_mix(__u64 h, __u64 v)
{
	h = (h ^ v) * 0x9e3779b97f4a7c15ULL;
	return h ^ (h >> 29);
}

/* One step of the thread search: is `ts` this thread's, else the next one. */
static long py_thread_step(__u64 i, struct py_walk *w)
{
	struct urec_py_layout *l = w->l;
	__u64 ts = w->ts;
	__u64 v = 0;

	if (!ts || !l)
		return 1;
	if (bpf_probe_read_user(&v, 8, (void *)(ts + l->thread_id))) {
		w->status |= UREC_PY_READ_FAILED;
		return 1;
	}
	if (v == w->fsbase) {
		w->found = 1;
		return 1;
	}
	v = 0;
	if (bpf_probe_read_user(&v, 8, (void *)(ts + l->tstate_next))) {
		w->status |= UREC_PY_READ_FAILED;
		return 1;
	}
	w->ts = v;
	return 0;
}

/* One frame: its fields from one read of the frame, the code object's validation words from
 * one read of the code object; then on to `previous`. */
static long py_frame_step(__u64 i, struct py_walk *w)
{
	struct scratch *s = w->s;
	struct urec_py_layout *l = w->l;
	__u64 f = w->frame;

	if (!s || !f || !l)
		return 1;
	if (w->n >= UREC_PY_MAX_FRAMES) {
		w->status |= UREC_PY_TRUNCATED;
		return 1;
	}
	__u8 *fw = s->buf + PY_FRAME_WIN;
	/* 1 to UREC_PY_WINDOW, branch-free (the recorder checks the real bound). */
	__u32 fsize = ((l->frame_size - 1) & (UREC_PY_WINDOW - 1)) + 1;
	if (bpf_probe_read_user(fw, fsize, (void *)f)) {
		w->status |= UREC_PY_READ_FAILED;
		return 1;
	}
	__u64 code = *(__u64 *)(fw + (l->frame_code & (UREC_PY_WINDOW - 8)));
	__u64 prev = *(__u64 *)(fw + (l->frame_previous & (UREC_PY_WINDOW - 8)));
	__u64 instr = *(__u64 *)(fw + (l->frame_instr & (UREC_PY_WINDOW - 8)));
	__u8 mark = fw[l->entry_offset & (UREC_PY_WINDOW - 1)];
	bool owner = l->entry_kind == UREC_PY_ENTRY_OWNER;
	bool entry = owner ? mark == l->entry_value : mark != 0;
	struct urec_py_frame *o =
		(struct urec_py_frame *)(s->buf + ((w->off + w->n * sizeof(*o)) & BODY_MASK));
	__u32 iv = UREC_PY_INSTR_NONE;

	o->code = code;
	o->qualname = 0;
	o->filename = 0;
	o->firstlineno = 0;
	/* A 3.12+ shim frame (owner C stack) runs no user code: a boundary only. */
	if (code && !(owner && entry)) {
		__u8 *cw = s->buf + PY_CODE_WIN;
		__u32 csize = ((l->code_size - 1) & (UREC_PY_WINDOW - 1)) + 1;
		__u64 lo = l->code_lo;

		if (bpf_probe_read_user(cw, csize, (void *)(code + lo))) {
			w->status |= UREC_PY_READ_FAILED;
			return 1;
		}
		o->qualname = *(__u64 *)(cw + ((l->code_qualname - lo) & (UREC_PY_WINDOW - 8)));
		o->filename = *(__u64 *)(cw + ((l->code_filename - lo) & (UREC_PY_WINDOW - 8)));
		o->firstlineno = *(__s32 *)(cw + ((l->code_firstlineno - lo) &
						  (UREC_PY_WINDOW - 4)));
		__u64 base = code + l->code_adaptive;

		if (instr >= base && instr - base < UREC_PY_INSTR_NONE)
			iv = instr - base;
	}
	o->instr = iv | (entry ? UREC_PY_ENTRY : 0);
	if (py_snapshots)
		w->hash = py_mix(py_mix(py_mix(py_mix(w->hash, o->code), o->qualname),
					o->filename),
				 (__u32)o->firstlineno);
	w->n++;
	w->frame = prev;
	return 0;
}

/*
 * Reads the thread state's window (thread_id, and cframe or current_frame: one read) into the
 * code window, free until the frame walk; true when `ts` is this thread's (its thread_id is
 * `fsbase`), with `*link` the cframe pointer (3.11/3.12) or the current frame (3.13+).
 */
static __always_inline bool py_ts_window(struct scratch *s, struct urec_py_layout *l, __u64 ts,
					 __u64 fsbase, __u64 *link)
{
	__u8 *tw = s->buf + PY_CODE_WIN;
	__u32 size = ((l->ts_size - 1) & (UREC_PY_WINDOW - 1)) + 1;
	__u64 lo = l->ts_lo;
	__u64 at = l->via_cframe ? l->cframe : l->current_frame;

	if (bpf_probe_read_user(tw, size, (void *)(ts + lo)))
		return false;
	if (*(__u64 *)(tw + ((l->thread_id - lo) & (UREC_PY_WINDOW - 8))) != fsbase)
		return false;
	*link = *(__u64 *)(tw + ((at - lo) & (UREC_PY_WINDOW - 8)));
	return true;
}

/*
 * Python code snapshots (urec.h, "Python code snapshots"). The recorder names a code object
 * from the live process when it reads the event, which fails once the process has exited (a
 * short script, a recorder that lags). So the program also sends what naming reads, once per
 * code object: `py_named` ({tgid, code} -> the code's check words hashed) holds the code
 * objects the recorder has named, `py_stacks_named` ({tgid, stack hash}) the stacks all of
 * whose frames it has named (so the steady state costs one lookup per event, not one per
 * frame), `py_sent` ({tgid, code} -> ktime) when a snapshot was last sent (a hot loop sends
 * each code object about once per PY_RESEND_NS until the recorder has caught up).
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct urec_py_code_key);
	__type(value, __u64);
} py_named SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct urec_py_code_key);
	__type(value, __u8);
} py_stacks_named SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct urec_py_code_key);
	__type(value, __u64);
} py_sent SEC(".maps");

/* A snapshot not yet answered by `py_named` is sent again after this long (a lost record). */
#define PY_RESEND_NS 50000000ULL
/* Snapshots sent per event at most: the rest come with the next events. */
#define PY_SEND_MAX 8
#define PY_SNAP_SIZE 24576 /* the snapshot buffer: a region starts below 8192 + 16 and
				    * is shorter than 8192 */
#define PY_SNAP_MASK 8191
#define PY_SNAP_REGION_MAX 4224 /* the largest region (line table header + data) */

struct py_snap_buf {
	__u8 buf[PY_SNAP_SIZE];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct py_snap_buf);
} py_snap SEC(".maps");

/* Appends one region (header and bytes, padded to 8) at `off` in `b`; returns the offset
 * after it, or `off` when no read succeeded (the region is left out). Global: verified once,
 * not once per region and path of its callers (whose states would not fit the verifier). */
__noinline __u32 py_region(struct py_snap_buf *b, __u32 off, __u64 addr, __u32 want, __u32 what)
{
	__u32 len = want;
	bool ok = false;

	if (!b || !addr)
		return off;
	off &= PY_SNAP_MASK;
	__u8 *buf = b->buf;
	struct urec_py_region *r = (struct urec_py_region *)(buf + off);

	for (int i = 0; i < 4; i++) {
		if (len > PY_SNAP_REGION_MAX)
			len = PY_SNAP_REGION_MAX;
		if (len == 0)
			break;
		/* The mask is for the verifier (len is already below it); the barrier keeps the
		 * compiler from dropping it. */
		__u64 sz = len;

		asm volatile("" : "+r"(sz));
		sz &= PY_SNAP_MASK;
		if (!bpf_probe_read_user(buf + ((off + sizeof(*r)) & PY_SNAP_MASK), sz,
					 (void *)addr)) {
			ok = true;
			break;
		}
		len >>= 1;
	}
	if (!ok)
		return off;
	r->addr = addr;
	r->len = len;
	r->what = what;
	return (off + sizeof(*r) + ((len + 7) & ~7U)) & PY_SNAP_MASK;
}

/* The state of one event's snapshot loop (bpf_loop's context). */
struct py_send {
	struct scratch *s;
	struct urec_py_layout *l;
	__u32 off;    /* the event's frames */
	__u32 n;
	__u32 tgid;
	__u32 sent;
	__u32 unnamed; /* frames whose code object `py_named` lacks */
};

/* Sends the snapshot of frame i's code object unless the recorder has it, or it was sent
 * just now. */
static long py_send_step(__u64 i, struct py_send *c)
{
	struct scratch *s = c->s;
	struct urec_py_layout *l = c->l;

	if (!s || !l || i >= c->n)
		return 1;
	if (c->sent >= PY_SEND_MAX) {
		c->unnamed++; /* not looked at: not known to be named */
		return 1;
	}
	struct urec_py_frame *f =
		(struct urec_py_frame *)(s->buf + ((c->off + i * sizeof(*f)) & BODY_MASK));
	__u64 code = f->code, qualname = f->qualname, filename = f->filename;
	__s32 firstlineno = f->firstlineno;

	if (!code || !qualname)
		return 0; /* a shim: nothing to name */
	struct urec_py_code_key k = { .tgid = c->tgid, .code = code };
	__u64 check = py_mix(py_mix(py_mix(UREC_PY_HASH_SEED, qualname), filename),
			     (__u32)firstlineno);
	__u64 *named = bpf_map_lookup_elem(&py_named, &k);

	if (named && *named == check)
		return 0;
	c->unnamed++;
	__u64 now = bpf_ktime_get_ns();
	__u64 *at = bpf_map_lookup_elem(&py_sent, &k);

	if (at && now - *at < PY_RESEND_NS)
		return 0;
	bpf_map_update_elem(&py_sent, &k, &now, BPF_ANY);

	__u32 zero = 0;
	struct py_snap_buf *b = bpf_map_lookup_elem(&py_snap, &zero);

	if (!b)
		return 1;
	__u8 *buf = b->buf;
	struct urec_event *e = (struct urec_event *)buf;
	__u64 id = bpf_get_current_pid_tgid();

	e->probe = UREC_PY_CODE_PROBE;
	e->kind = UREC_KIND_PYCODE;
	e->flags = 0;
	e->nframes = 0;
	e->weight_shift = 0;
	e->pid = id >> 32;
	e->tid = (__u32)id;
	e->cpu = bpf_get_smp_processor_id();
	e->args_len = 0;
	e->fault_mask = 0;
	e->time_ns = now;
	e->latency_ns = 0;

	struct urec_py_code *pc = (struct urec_py_code *)(buf + sizeof(*e));
	__u16 nregions = 0;
	__u32 off = sizeof(*e) + sizeof(*pc);

	pc->code = code;
	pc->qualname = qualname;
	pc->filename = filename;
	pc->firstlineno = firstlineno;
	pc->_pad = 0;

	/* The code object's words: read_code's span, which holds the line table pointer. */
	__u32 csize = ((l->snap_size - 1) & (UREC_PY_WINDOW - 1)) + 1;
	__u32 code_at = off;

	off = py_region(b, off, code + l->snap_lo, csize, UREC_PY_R_CODE);
	nregions += off != code_at;
	__u64 linetable = 0;

	if (off != code_at) {
		__u8 *cw = buf + ((code_at + sizeof(struct urec_py_region)) & PY_SNAP_MASK);

		if (l->code_linetable >= l->snap_lo && l->code_linetable + 8 <= l->snap_lo + csize)
			linetable = *(__u64 *)(cw + ((l->code_linetable - l->snap_lo) &
						     (UREC_PY_WINDOW - 8)));
	}
	/* A str's size: its header and at most 4 bytes a character (UCS-4), capped. */
	__u64 len = 0;
	__u32 prev;
	__u32 want = UREC_PY_SNAP_STR;

	if (!bpf_probe_read_user(&len, 8, (void *)(qualname + l->unicode_length)) &&
	    len < UREC_PY_SNAP_STR)
		want = l->unicode_data + len * 4 + 4;
	if (want > UREC_PY_SNAP_STR)
		want = UREC_PY_SNAP_STR;
	prev = off;
	off = py_region(b, off, qualname, want, UREC_PY_R_QUALNAME);
	nregions += off != prev;
	want = UREC_PY_SNAP_FILE;
	len = 0;
	if (!bpf_probe_read_user(&len, 8, (void *)(filename + l->unicode_length)) &&
	    len < UREC_PY_SNAP_FILE)
		want = l->unicode_data + len * 4 + 4;
	if (want > UREC_PY_SNAP_FILE)
		want = UREC_PY_SNAP_FILE;
	prev = off;
	off = py_region(b, off, filename, want, UREC_PY_R_FILENAME);
	nregions += off != prev;
	if (linetable) {
		len = UREC_PY_SNAP_LINES;
		if (bpf_probe_read_user(&len, 8, (void *)(linetable + l->bytes_size)) ||
		    len > UREC_PY_SNAP_LINES)
			len = UREC_PY_SNAP_LINES;
		want = (l->bytes_data & 255) + len + 1;
		prev = off;
		off = py_region(b, off, linetable, want, UREC_PY_R_LINETABLE);
		nregions += off != prev;
	}
	pc->nregions = nregions;
	off &= PY_SNAP_MASK;
	if (off >= sizeof(*e) && off <= PY_SNAP_MASK)
		bpf_ringbuf_output(&events, buf, off, BPF_RB_NO_WAKEUP);
	c->sent++;
	return 0;
}

/*
 * Sends the snapshots of the code objects of the frames of the Python block at `off` in the
 * scratch buffer (put_py's, whose stack hash it left at PY_HASH_AT) that the recorder has not
 * named: before the event itself, so that a recorder reading the ring in order has them when
 * it names the event. The steady state, a stack all of whose frames were named, costs the one
 * `py_stacks_named` lookup. Global: verified once.
 */
__noinline long py_send_codes(struct scratch *s, __u32 off, __u32 tgid, __u32 layout)
{
	struct py_send c = { .s = s, .tgid = tgid };

	if (!s)
		return 0;
	off &= OFF_MASK;
	struct urec_py_head *h = (struct urec_py_head *)(s->buf + off);
	struct urec_py_code_key k = { .tgid = tgid, .code = *(__u64 *)(s->buf + PY_HASH_AT) };

	c.n = h->nframes;
	c.off = off + sizeof(*h);
	if (!c.n || bpf_map_lookup_elem(&py_stacks_named, &k))
		return 0;
	c.l = bpf_map_lookup_elem(&py_layouts, &layout);
	if (!c.l)
		return 0;
	bpf_loop(UREC_PY_MAX_FRAMES, py_send_step, &c, 0);
	/* Every code object named, but not this stack (the recorder's entry was evicted, or it
	 * has not written it yet): the next events take the one-lookup path. */
	if (!c.unnamed) {
		__u8 one = 1;

		bpf_map_update_elem(&py_stacks_named, &k, &one, BPF_ANY);
	}
	return c.sent;
}

/*
 * Appends the Python block at `off` (just after the args) for the interpreter whose
 * _PyRuntime is at `runtime`, read with layout `layout`; returns the offset after it, with
 * PY_WRITTEN set when a block was written.
 *
 * The probed thread's PyThreadState is the one whose thread_id (pthread_self(), which on
 * x86-64 glibc is the thread pointer) equals the task's fsbase: found in `py_tstates`, checked
 * again, else searched in the first interpreter's thread list (at most UREC_PY_MAX_THREADS).
 * Then its current frame (through cframe for 3.11/3.12) and `previous`, at most
 * UREC_PY_MAX_FRAMES frames. Every read is bpf_probe_read_user: a failed one ends the walk
 * with the frames so far.
 *
 * Global (not inlined), the loops bpf_loop's: verified once.
 */
__noinline long put_py(struct scratch *s, __u32 off, __u64 runtime, __u32 layout)
{
	struct py_walk w = {};

	if (!s)
		return off;
	off &= OFF_MASK;

	struct urec_py_layout *l = bpf_map_lookup_elem(&py_layouts, &layout);

	if (!l)
		return off;
	w.l = l;
	w.s = s;
	w.off = off + sizeof(struct urec_py_head);
	w.hash = UREC_PY_HASH_SEED;

	struct task_struct *task = bpf_get_current_task_btf();
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct py_tstate *c = bpf_map_lookup_elem(&py_tstates, &tid);
	__u64 link = 0;

	w.fsbase = BPF_CORE_READ(task, thread.fsbase);
	if (c && c->runtime == runtime && c->ts && py_ts_window(s, l, c->ts, w.fsbase, &link)) {
		w.ts = c->ts;
		w.found = 1;
	} else if (c && c->runtime == runtime && !c->ts && bpf_ktime_get_ns() < c->retry_at) {
		w.status = UREC_PY_NO_THREAD;
	} else {
		__u64 interp = 0;

		if (bpf_probe_read_user(&interp, 8, (void *)(runtime + l->interpreters_head)) ||
		    !interp ||
		    bpf_probe_read_user(&w.ts, 8, (void *)(interp + l->threads_head))) {
			w.status |= UREC_PY_READ_FAILED;
		} else {
			bpf_loop(UREC_PY_MAX_THREADS, py_thread_step, &w, 0);
			if (w.found && !py_ts_window(s, l, w.ts, w.fsbase, &link)) {
				w.found = 0;
				w.status |= UREC_PY_READ_FAILED;
			}
			if (w.found) {
				struct py_tstate nv = { .ts = w.ts, .runtime = runtime };

				bpf_map_update_elem(&py_tstates, &tid, &nv, BPF_ANY);
			} else if (!w.status) {
				struct py_tstate nv = {
					.runtime = runtime,
					.retry_at = bpf_ktime_get_ns() + PY_MISS_RETRY_NS,
				};

				bpf_map_update_elem(&py_tstates, &tid, &nv, BPF_ANY);
			}
		}
	}
	if (w.found) {
		bool ok = true;

		if (l->via_cframe)
			ok = link &&
			     !bpf_probe_read_user(&w.frame, 8, (void *)(link + l->current_frame));
		else
			w.frame = link;
		if (ok)
			bpf_loop(UREC_PY_MAX_FRAMES + 1, py_frame_step, &w, 0);
		else
			w.status |= UREC_PY_READ_FAILED;
	} else if (!w.status) {
		w.status = UREC_PY_NO_THREAD;
	}
	struct urec_py_head *h = (struct urec_py_head *)(s->buf + off);
	__u32 n = w.n;

	if (n > UREC_PY_MAX_FRAMES)
		n = UREC_PY_MAX_FRAMES;
	h->nframes = n;
	h->status = w.status;
	h->_pad = 0;
	/* For py_send_codes, which the caller runs next (not from here: the verifier's limit on
	 * the combined stack of nested calls). */
	*(__u64 *)(s->buf + PY_HASH_AT) = w.hash;

	long end = (off + sizeof(*h) + n * sizeof(struct urec_py_frame)) | PY_WRITTEN;

	/* As in put_dwarf: the caller's mask must stay. */
	asm volatile("" : "+r"(end));
	return end;
}

/*
 * Sampling: follows the ring's fill `avail` (bytes unread) with hysteresis. Past half full the
 * shift rises only once the fill has grown by a sixteenth of the ring since its lowest point
 * at the current shift: once the programs write less than the reader drains, the backlog takes
 * a while to go, and rising on through it (or on a reader's pause) would leave a few events
 * standing for thousands of calls each, a noisy estimate.
 */
static __always_inline void adapt(struct cpu_state *c, __u64 avail)
{
	__u32 shift = c->shift;
	__u64 low = c->low_avail;

	if (avail < low)
		low = avail;
	if (avail > ring_bytes / 2 && avail > low + ring_bytes / 16) {
		if (shift < UREC_MAX_SHIFT)
			c->shift = shift + 1;
		low = avail;
	} else if (avail < ring_bytes / 8 && shift) {
		c->shift = shift - 1;
		low = avail;
	}
	c->low_avail = low;
}

/* Copies the record built in scratch to the ring buffer, waking the reader only when the
 * unread data passes `wakeup_bytes`; the same look at the unread size steers the sampling. */
static __always_inline __u64 wake_flag(__u64 size)
{
	struct cpu_state *c = this_cpu();
	__u64 avail;

	/* The unread size is read only every WAKEUP_CHECK_EVERY records per CPU, or after
	 * `check_bytes` (big records fill a small ring in fewer): it is the consumer's
	 * position, a cache line the reader writes from the other CPU. */
	if (c) {
		c->bytes += size;
		if ((c->events++ % WAKEUP_CHECK_EVERY) != 0 && c->bytes < check_bytes)
			return BPF_RB_NO_WAKEUP;
		c->bytes = 0;
	}
	avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	if (c)
		adapt(c, avail);
	if (avail > wakeup_bytes)
		return BPF_RB_FORCE_WAKEUP;
	return BPF_RB_NO_WAKEUP;
}

#define SAMPLED_OUT 0xff

/*
 * Whether this call's events are written: its weight shift (the call stands for 2^shift
 * calls), or SAMPLED_OUT. Under pressure (shift > 0) the fill is also looked at every
 * WAKEUP_CHECK_EVERY calls left out, so that the shift comes down when the pressure ends even
 * though few records are written.
 */
static __always_inline __u32 sample_call(void)
{
	struct cpu_state *c = this_cpu();
	__u32 shift;

	if (!c)
		return 0;
	shift = c->shift;
	if (!shift)
		return 0;
	if (shift > UREC_MAX_SHIFT)
		shift = UREC_MAX_SHIFT;
	if ((bpf_get_prandom_u32() & ((1U << shift) - 1)) == 0)
		return shift;
	if ((c->skipped++ % WAKEUP_CHECK_EVERY) == 0)
		adapt(c, bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA));
	return SAMPLED_OUT;
}

static __always_inline void count_sampled(__u32 probe)
{
	struct urec_agg *a = agg_of(probe);

	if (a)
		a->sampled++;
}

#include "unwind.bpf.h" /* -g kernel-dwarf: kd_stack() */

/* Wake-ups forced by KD_ASK copies, per CPU at most one in this long: the recorder needs one. */
#define ASK_EVERY_NS 1000000ULL

/* `ask`: a copy the in-kernel walk asks the recorder to hear of now (KD_ASK). */
static __always_inline void submit(__u8 *buf, __u64 size, __u32 probe, __u8 kind, bool ask)
{
	__u64 wake = wake_flag(size);

	if (ask) {
		struct cpu_state *c = this_cpu();
		__u64 now = bpf_ktime_get_ns();

		if (c && now - c->asked_at > ASK_EVERY_NS) {
			c->asked_at = now;
			wake = BPF_RB_FORCE_WAKEUP;
		}
	}

	if (size < sizeof(struct urec_event) || size > SCRATCH_SIZE ||
	    bpf_ringbuf_output(&events, buf, size, wake))
		count_lost(probe, kind);
}

/*
 * Builds and submits one record. `all_args`: fetch every argument (one-sided probes), not only
 * those of this kind; `stack`: capture the user stack (whether the caller at [sp] is added
 * comes from the probe's UREC_P_* flags); `leaf`: prepend the probed function's address
 * (return-only probes, whose stack starts in the caller).
 *
 * An entry event is stamped here, after its arguments and stack are captured, and the stamp is
 * returned: the call's latency runs from it, so it excludes urec's own capture (SPEC.md,
 * "Probe sites and probe cost"), and the entry's time stays exactly `return time - latency`,
 * which the report pairs by. Other kinds keep `now`.
 */
static __always_inline struct urec_probe_cfg *probe_cfg(__u32 probe)
{
	return bpf_map_lookup_elem(&probes, &probe);
}

/*
 * `tid`: the thread the event is recorded for, 0 for the current one. A Go return is recorded
 * for the thread of its call's entry (goroutines move between threads), so that readers pair
 * it with that entry.
 */
/*
 * Stack ids (urec.h, "Stack ids"). With them an event of a stack walked in the kernel carries 8
 * bytes instead of 8 per frame: the ring's bytes per event no longer grow with the depth, and
 * the recorder interns each distinct stack once instead of hashing every event's frames.
 * Keyed by the frames' hash alone (not the process): identical address lists are identical
 * stacks in the file's terms. Two distinct stacks of one recording sharing a 64-bit hash would
 * be merged; at a million distinct stacks the odds are about 3 in 10^8.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, UREC_STACK_STORE);
	__type(key, __u64);
	__type(value, struct urec_stack);
} stacks SEC(".maps");

/* Written by the recorder only: allocated as ids arrive, not up front (NO_PREALLOC). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, UREC_STACKS_KNOWN);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, __u8);
} stacks_known SEC(".maps");

/* 0: frames always travel in the events (UREC_NO_STACK_IDS=1, to compare). */
const volatile __u8 stack_ids = 1;
#define UREC_STACK_HASH_SEED 0x7572656373740001ULL

struct stack_hash {
	__u8 *buf;
	__u32 off;
	__u32 n;
	__u64 h;
};

static long stack_hash_step(__u64 i, struct stack_hash *c)
{
	if (i >= c->n)
		return 1;
	c->h = py_mix(c->h, *(__u64 *)(c->buf + ((c->off + i * 8) & BODY_MASK)));
	return 0;
}

/*
 * Replaces the `n` frames at `off` by their stack id, storing them in `stacks` unless the
 * recorder has the id already. False: the frames stay (`stacks` is full, or ids are off).
 */
static __always_inline bool put_stack_id(struct scratch *s, __u32 off, __u32 n)
{
	struct stack_hash c = {
		.buf = s->buf, .off = off & BODY_MASK, .n = n, .h = UREC_STACK_HASH_SEED ^ n,
	};

	if (!stack_ids || !n || n > UREC_STACK_SLOTS)
		return false;
	bpf_loop(UREC_STACK_SLOTS, stack_hash_step, &c, 0);
	if (!bpf_map_lookup_elem(&stacks_known, &c.h)) {
		/* The value is the frames as they lie in the buffer, the count after the last slot
		 * (struct urec_stack). Already stored and not yet read (another event of it in
		 * flight) is -EEXIST: the id alone is enough then too. */
		*(__u64 *)(s->buf + ((off & BODY_MASK) + UREC_STACK_SLOTS * 8)) = n;
		long r = bpf_map_update_elem(&stacks, &c.h, s->buf + (off & BODY_MASK), BPF_NOEXIST);

		if (r && r != -17 /* EEXIST */)
			return false;
	}
	*(__u64 *)(s->buf + (off & BODY_MASK)) = c.h;
	return true;
}

static __always_inline __u64 emit_for(struct pt_regs *ctx, struct urec_probe_cfg *cfg,
				      __u32 probe, __u8 kind, __u64 now, __u64 latency, __u8 flags,
				      bool all_args, bool stack, bool leaf, __u64 probe_ip,
				      __u32 tid, __u64 goroutine, __u32 wshift)
{
	bool entry = kind == UREC_KIND_ENTRY;

	if (count_only)
		return now; /* counted by the caller already (load-time constant: pruned when 0) */
	__u32 cpu = bpf_get_smp_processor_id();
	__u64 id = bpf_get_current_pid_tgid();

	if (tid)
		id = (id & ~0xffffffffULL) | tid;

	if (!cfg) {
		count_lost(probe, kind);
		return entry ? bpf_ktime_get_ns() : now;
	}
	__u32 dwarf_size = (cfg->flags & UREC_P_DWARF) ? cfg->stack_size : 0;

	if (!cfg->nargs && !goroutine && !(stack && (dwarf_size || stack_depth))) {
		/* A bare 40-byte record: written in place, no scratch buffer, no copy. */
		struct urec_event *r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);

		if (entry)
			now = bpf_ktime_get_ns();
		if (!r) {
			count_lost(probe, kind);
			return now;
		}
		r->probe = probe;
		r->kind = kind;
		r->flags = flags;
		r->nframes = 0;
		r->weight_shift = wshift;
		r->pid = id >> 32;
		r->tid = (__u32)id;
		r->cpu = cpu;
		r->args_len = 0;
		r->fault_mask = 0;
		r->time_ns = now;
		r->latency_ns = latency;
		bpf_ringbuf_submit(r, wake_flag(sizeof(*r)));
		return now;
	}
	struct scratch *s = bpf_map_lookup_elem(&scratch, &cpu);

	if (!s) {
		count_lost(probe, kind);
		return entry ? bpf_ktime_get_ns() : now;
	}
	__u8 *buf = s->buf;
	struct urec_event *e = (struct urec_event *)buf;
	/* A Go event's goroutine (UREC_F_GOROUTINE) sits between the header and the args. */
	__u32 args_at = goroutine ? sizeof(*e) + 8 : sizeof(*e);
	__u32 off = args_at;

	if (goroutine) {
		*(__u64 *)(buf + sizeof(*e)) = goroutine;
		flags |= UREC_F_GOROUTINE;
	}

	e->probe = probe;
	e->kind = kind;
	e->weight_shift = wshift;
	e->pid = id >> 32;
	e->tid = (__u32)id;
	e->cpu = cpu;
	e->latency_ns = latency;
	e->fault_mask = fetch_args(ctx, cfg, s, &off, kind == UREC_KIND_RETURN, all_args, probe_ip);
	off &= OFF_MASK;
	e->args_len = off - args_at;

	__u32 nframes = 0;
	__u32 depth = stack_depth;

	if (stack && (dwarf_size || depth) && python_known()) {
		__u32 tgid = id >> 32;
		struct urec_py_proc *py = bpf_map_lookup_elem(&py_procs, &tgid);

		if (py) {
			long r = put_py(s, off, py->runtime, py->layout);

			if (r & PY_WRITTEN) {
				flags |= UREC_F_PYTHON;
				if (py_snapshots)
					py_send_codes(s, off, tgid, py->layout);
			}
			off = r & BODY_MASK;
		}
	}

	bool ask = false;

	if (stack && dwarf_size && kernel_dwarf) {
		nframes = kd_stack(ctx, s, off, leaf ? probe_ip : 0, depth);
		if (nframes & KD_ASK) {
			ask = true;
			nframes = 0;
		}
	}
	if (stack && dwarf_size && !nframes) {
		__u64 size = put_dwarf(ctx, s, off, leaf ? probe_ip : 0, dwarf_size);

		if (entry)
			now = bpf_ktime_get_ns();
		e->time_ns = now;
		e->nframes = 0;
		e->flags = flags | UREC_F_DWARF;
		submit(buf, size, probe, kind, ask);
		return now;
	}
	if (stack && depth && !nframes) {
		__u32 limit = depth > UREC_MAX_DEPTH ? UREC_MAX_DEPTH : depth;
		__u32 mode = 0;

		if (kind == UREC_KIND_ENTRY && (cfg->flags & UREC_P_ADD_CALLER)) {
			mode |= FP_CALLER;
			limit++; /* as bpf_get_stack's frames plus the inserted one */
		} else if (kind == UREC_KIND_ENTRY && (cfg->flags & UREC_P_KERNEL_CALLER)) {
			mode |= FP_CALLER;
		}
		if (leaf && probe_ip) {
			mode |= FP_LEAF;
			limit++;
		}
		if (mode & FP_CALLER)
			mode |= (__u32)cfg->caller_slot << 8;
		long r = put_fp_stack(ctx, s, off, limit | (mode << 16), probe_ip);

		nframes = r & 255;
		if ((mode & FP_LEAF) && nframes > 0)
			flags |= UREC_F_FUNC_ADDED;
		else if ((r & FP_CALLER_READ) && (cfg->flags & UREC_P_ADD_CALLER))
			flags |= UREC_F_CALLER_ADDED;
	}
	__u32 body = nframes * 8;

	if (put_stack_id(s, off, nframes)) {
		flags |= UREC_F_STACK_ID;
		body = 8;
	}
	e->nframes = nframes;
	e->flags = flags;
	if (entry)
		now = bpf_ktime_get_ns();
	e->time_ns = now;

	submit(buf, (off + body) & SIZE_MASK, probe, kind, false);
	return now;
}

static __always_inline __u64 emit(struct pt_regs *ctx, struct urec_probe_cfg *cfg, __u32 probe,
				  __u8 kind, __u64 now, __u64 latency, __u8 flags, bool all_args,
				  bool stack, bool leaf, __u64 probe_ip, __u32 wshift)
{
	return emit_for(ctx, cfg, probe, kind, now, latency, flags, all_args, stack, leaf, probe_ip,
			0, 0, wshift);
}

/* The session cookie: the entry time (bpf_ktime_get_ns < 2^59: 18 years of uptime), the
 * call's weight shift above it, and whether it was sampled out. */
#define SESSION_OUT (1ULL << 63)
#define SESSION_SHIFT_AT 59
#define SESSION_TIME ((1ULL << SESSION_SHIFT_AT) - 1)

/* The goroutine of a Go probe's event (UREC_P_GO: r14 in Go's register ABI), else 0. */
static __always_inline __u64 go_goroutine(struct pt_regs *ctx, struct urec_probe_cfg *cfg)
{
	return cfg && (cfg->flags & UREC_P_GO) ? ctx->r14 : 0;
}

SEC("uprobe.session")
int urec_session(struct pt_regs *ctx)
{
	__u32 probe = bpf_get_attach_cookie(ctx);

	if (!bpf_session_is_return()) {
		if (!traced(bpf_get_current_pid_tgid() >> 32))
			return 1; /* no return callback for this call */

		struct urec_probe_cfg *cfg = probe_cfg(probe);
		__u64 ip = bpf_get_func_ip(ctx);

		if (rejected(ctx, cfg, probe, ip))
			return 1; /* nor for a call the predicate rejects */
		count_call(probe);
		__u64 *cookie = bpf_session_cookie();
		__u32 w = sample_call();

		if (w == SAMPLED_OUT) {
			/* Its return still counts the latency, and writes nothing either. */
			count_sampled(probe);
			*cookie = bpf_ktime_get_ns() | SESSION_OUT;
			return 0;
		}
		/* The call's time is the entry event's, stamped after its capture. */
		__u64 now = emit(ctx, cfg, probe, UREC_KIND_ENTRY, 0, 0, 0, false, true, false, ip, w);

		*cookie = now | ((__u64)w << SESSION_SHIFT_AT);
		return 0;
	}
	__u64 now = bpf_ktime_get_ns();
	__u64 *cookie = bpf_session_cookie();
	__u64 entered = *cookie;
	__u64 lat = now - (entered & SESSION_TIME);

	count_return(probe, true, lat, false);
	if (entered & SESSION_OUT)
		return 0;
	emit(ctx, probe_cfg(probe), probe, UREC_KIND_RETURN, now, lat, UREC_F_LATENCY, false,
	     false, false, bpf_get_func_ip(ctx), (entered >> SESSION_SHIFT_AT) & 15);
	return 0;
}

SEC("uprobe.multi")
int urec_entry(struct pt_regs *ctx)
{
	__u32 probe = bpf_get_attach_cookie(ctx);

	if (!traced(bpf_get_current_pid_tgid() >> 32))
		return 0;

	struct urec_probe_cfg *cfg = probe_cfg(probe);
	__u64 ip = bpf_get_func_ip(ctx);

	if (rejected(ctx, cfg, probe, ip))
		return 0;
	count_call(probe);
	if (count_only)
		return 0; /* before the clock read emit_for's arguments take */
	__u32 w = sample_call();

	if (w == SAMPLED_OUT) {
		count_sampled(probe);
		return 0;
	}
	emit_for(ctx, cfg, probe, UREC_KIND_ENTRY, 0, 0, 0, true, true, false, ip, 0,
		 go_goroutine(ctx, cfg), w);
	return 0;
}

SEC("uretprobe.multi")
int urec_return(struct pt_regs *ctx)
{
	__u32 probe = bpf_get_attach_cookie(ctx);

	if (!traced(bpf_get_current_pid_tgid() >> 32))
		return 0;

	struct urec_probe_cfg *cfg = probe_cfg(probe);
	__u64 ip = bpf_get_func_ip(ctx);

	if (rejected(ctx, cfg, probe, ip))
		return 0;
	count_return(probe, false, 0, true);
	if (count_only)
		return 0;
	__u32 w = sample_call();

	if (w == SAMPLED_OUT) {
		count_sampled(probe);
		return 0;
	}
	emit_for(ctx, cfg, probe, UREC_KIND_RETURN, bpf_ktime_get_ns(), 0, 0, true, true, true, ip,
		 0, go_goroutine(ctx, cfg), w);
	return 0;
}

/*
 * Go (SPEC.md, "Go programs"). A uretprobe crashes Go's runtime, so a Go function's return is
 * a plain uprobe on each of its `ret`s, and these two programs pair calls themselves, per
 * goroutine: the key is (goroutine, probe, depth), the depth measured from the top of the
 * goroutine's stack (`g.stack.hi - sp`), which a stack copy preserves where raw `sp` does not.
 * At the entry site (past the stack check) and at a `ret`, `sp` points at the return address,
 * so both sides of one call compute the same depth. The goroutine is r14 in Go's register
 * ABI (Go >= 1.17), which the stack check at the entry site itself reads.
 *
 * A call whose entry the map could not take (full: UREC_GO_CALLS pending calls) or did not
 * see has no return event: the report counts it unmatched, nothing is evicted. An entry left
 * behind by a frame that never returns (panic + recover, Goexit) is replaced by the next call
 * at the same depth of the same goroutine.
 */
struct go_call_key {
	__u64 g;
	__u32 probe;
	__u32 depth;
};

struct go_call {
	__u64 ts;
	__u32 tid;
	__u32 weight; /* the call's weight shift, or SAMPLED_OUT (its return writes nothing) */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, UREC_GO_CALLS);
	__type(key, struct go_call_key);
	__type(value, struct go_call);
} go_calls SEC(".maps");

static __always_inline bool go_key(struct pt_regs *ctx, __u32 probe, struct go_call_key *k)
{
	__u64 g = ctx->r14;
	__u64 hi = 0;

	if (!g || bpf_probe_read_user(&hi, sizeof(hi), (void *)(g + 8)))
		return false;
	if (hi <= ctx->sp || hi - ctx->sp > 0xffffffffULL)
		return false;
	k->g = g;
	k->probe = probe;
	k->depth = hi - ctx->sp;
	return true;
}

SEC("uprobe.multi")
int urec_go_entry(struct pt_regs *ctx)
{
	__u32 probe = bpf_get_attach_cookie(ctx);
	__u64 id = bpf_get_current_pid_tgid();

	if (!traced(id >> 32))
		return 0;

	struct urec_probe_cfg *cfg = probe_cfg(probe);
	__u64 ip = bpf_get_func_ip(ctx);

	if (rejected(ctx, cfg, probe, ip))
		return 0;
	count_call(probe);
	struct go_call_key k = {};
	__u32 w = sample_call();
	bool keyed = go_key(ctx, probe, &k);
	__u64 now;

	if (w == SAMPLED_OUT) {
		count_sampled(probe);
		now = bpf_ktime_get_ns();
	} else {
		/* The entry event's stamp, taken after its capture: the latency excludes it. */
		now = emit_for(ctx, cfg, probe, UREC_KIND_ENTRY, 0, 0, 0, false, true, false, ip, 0,
			       k.g, w);
	}
	if (keyed) {
		struct go_call v = { .ts = now, .tid = (__u32)id, .weight = w };

		bpf_map_update_elem(&go_calls, &k, &v, BPF_ANY);
	}
	return 0;
}

SEC("uprobe.multi")
int urec_go_return(struct pt_regs *ctx)
{
	__u32 probe = bpf_get_attach_cookie(ctx);

	if (!traced(bpf_get_current_pid_tgid() >> 32))
		return 0;

	struct go_call_key k = {};

	if (!go_key(ctx, probe, &k))
		return 0;

	struct go_call *c = bpf_map_lookup_elem(&go_calls, &k);

	if (!c)
		return 0; /* rejected by the predicate, entered before attach, or no room */
	__u64 now = bpf_ktime_get_ns();
	__u64 ts = c->ts;
	__u32 tid = c->tid;
	__u32 w = c->weight;

	bpf_map_delete_elem(&go_calls, &k);
	count_return(probe, true, now - ts, false);
	if (w == SAMPLED_OUT)
		return 0;
	emit_for(ctx, probe_cfg(probe), probe, UREC_KIND_RETURN, now, now - ts, UREC_F_LATENCY,
		 false, false, false, bpf_get_func_ip(ctx), tid, k.g, w & 15);
	return 0;
}

/* Fallback programs for kernels without uprobe_multi (or when it is refused). */

/* Cookie bit 31 marks an entry-only (or return-only) probe: every argument on its one event. */
#define COOKIE_ONE_SIDED (1ULL << 31)

SEC("uprobe")
int urec_entry_single(struct pt_regs *ctx)
{
	__u64 cookie = bpf_get_attach_cookie(ctx);
	__u32 probe = cookie & ~COOKIE_ONE_SIDED;
	__u64 id = bpf_get_current_pid_tgid();

	struct urec_probe_cfg *cfg = probe_cfg(probe);

	if (!traced(id >> 32))
		return 0;
	bool reject = rejected(ctx, cfg, probe, ctx->ip);
	struct tstack *t = NULL;
	__u32 d = 0;

	if (!(cookie & COOKIE_ONE_SIDED)) {
		__u32 tid = (__u32)id;

		t = bpf_map_lookup_elem(&pending, &tid);
		if (!t) {
			struct tstack empty = {};

			bpf_map_update_elem(&pending, &tid, &empty, BPF_NOEXIST);
			t = bpf_map_lookup_elem(&pending, &tid);
		}
		if (t) {
			d = t->depth;
			/* The return of a rejected call is dropped too (calls deeper than 32 in
			 * one thread are not marked: their returns would be recorded unmatched). */
			if (d < 32) {
				if (reject)
					t->filtered |= 1U << d;
				else
					t->filtered &= ~(1U << d);
			}
			t->depth = d + 1;
		}
	}
	if (reject)
		return 0;
	count_call(probe);
	/* The call's time is the entry event's, stamped after its capture (see emit_for). */
	__u64 now = emit(ctx, cfg, probe, UREC_KIND_ENTRY, 0, 0, 0, !!(cookie & COOKIE_ONE_SIDED),
			 true, false, ctx->ip, 0);

	if (t && d < FALLBACK_DEPTH)
		t->ts[d] = now;
	return 0;
}

SEC("uretprobe")
int urec_return_single(struct pt_regs *ctx)
{
	__u64 cookie = bpf_get_attach_cookie(ctx);
	__u32 probe = cookie & ~COOKIE_ONE_SIDED;
	__u64 id = bpf_get_current_pid_tgid();
	__u64 now = bpf_ktime_get_ns();
	__u64 latency = 0;
	__u8 flags = 0;
	bool return_only = cookie & COOKIE_ONE_SIDED; /* reused: the return-only marker */

	struct urec_probe_cfg *cfg = probe_cfg(probe);

	if (!traced(id >> 32))
		return 0;
	if (return_only && rejected(ctx, cfg, probe, 0))
		return 0;
	if (return_only)
		count_return(probe, false, 0, true);
	if (!return_only) {
		__u32 tid = (__u32)id;
		struct tstack *t = bpf_map_lookup_elem(&pending, &tid);

		if (t && t->depth > 0) {
			__u32 d = t->depth - 1;

			t->depth = d;
			if (d < 32 && (t->filtered & (1U << d)))
				return 0; /* its entry was rejected */
			if (d < FALLBACK_DEPTH) {
				latency = now - t->ts[d];
				flags = UREC_F_LATENCY;
			}
			count_return(probe, flags & UREC_F_LATENCY, latency, false);
		}
	}
	emit(ctx, cfg, probe, UREC_KIND_RETURN, now, latency, flags, return_only, return_only,
	     return_only, 0, 0);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(urec_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 ptgid = parent->tgid;
	__u32 ctgid = child->tgid;
	__u8 one = 1;

	if (ptgid != ctgid && bpf_map_lookup_elem(&tgids, &ptgid))
		bpf_map_update_elem(&tgids, &ctgid, &one, BPF_ANY);
	/* A Python process forked without exec (multiprocessing, os.fork) runs the same
	 * interpreter at the same addresses: its child walks from its first event, not from
	 * when the recorder reads the fork (which then enters the same entry; an exec or exit
	 * removes it). */
	if (ptgid != ctgid && python_known()) {
		struct urec_py_proc *py = bpf_map_lookup_elem(&py_procs, &ptgid);

		if (py) {
			struct urec_py_proc copy = *py;

			bpf_map_update_elem(&py_procs, &ctgid, &copy, BPF_ANY);
		}
	}
	return 0;
}

/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * In-kernel DWARF unwinding (`-g kernel-dwarf`, issue 31): the walk of
 * `unwind-table/src/walk.rs` over the compact tables of the `urec-unwind-table` crate, held in
 * BPF maps that the recorder fills lazily (record/src/kunwind). Included by urec.bpf.c, which
 * calls kd_stack() from emit_for for `-g dwarf` probes when `kernel_dwarf` is set; every other
 * mode is untouched.
 *
 * kd_stack() either writes the whole stack (as a frame-pointer walk does: plain frames, no
 * copy) or writes nothing and returns 0, and the event takes today's copy-and-unwind path
 * (put_dwarf). It writes a stack only when the walk ends where the recorder's framehop unwind
 * of a copy would end with the same frames:
 *
 *  - an end-of-stack rule or a zero return address (complete), or
 *  - the depth limit with more frames to come (the recorder marks a stack of `stack_depth`
 *    frames truncated, as it does after cutting a framehop unwind to that depth).
 *
 * Everything else falls back: a pc in no mapping of the process or in a binary whose table is
 * not loaded (the fallback event is how the recorder learns to load it), a `Fallback` row
 * (a CFA in another register, DWARF expressions), a failed read, an inconsistent step, an unknown
 * process, mappings older than the process's last exec, and a complete stack of exactly
 * `stack_depth` frames (which the recorder would take for a cut one). So the in-kernel stacks
 * equal today's by construction wherever walk.rs equals framehop, which issue 30 proved on
 * every stack of its recordings.
 *
 * Reads mirror the copy framehop sees: nothing below the probe's sp (the copy starts there: an
 * epilogue's rbp slot below sp keeps rbp, as in walk.rs), and a stack word equal to the
 * uretprobe trampoline reads as the return address the pending uretprobe whose slot it is hid
 * (`return_instances`, innermost first, the same 16 put_dwarf sends).
 *
 * Maps (memory bounds in record/src/kunwind/mod.rs):
 *  - kd_words:  one mmapable array of 4 KiB blocks holding every loaded table's pages, rows and
 *               rules (u32 words), allocated by the recorder; an array lookup is inlined by the
 *               verifier (no helper call per binary-search step), and the recorder writes a
 *               table with one memcpy instead of one syscall per word.
 *  - kd_tables: table id -> where its three arrays lie in kd_words, and the load's generation
 *               (0: not loaded).
 *  - kd_cache:  per CPU, rule words by (table id, generation, stated address): a hot probe's
 *               stacks repeat, and a hit spares the page's bisection (a dozen word reads).
 *  - kd_procs:  tgid -> the process's executable mappings (start, end, load bias, table id),
 *               sorted, searched by bisection; `as_of` is the CLOCK_MONOTONIC time of the
 *               recorder's view they reflect.
 *  - kd_execs:  tgid -> time of its last exec (urec_kd_exec), so that mappings written before
 *               an exec are never applied to the new image.
 *  - kd_stats:  per-CPU counts of how walks ended (KD_S_*), for the recorder's summary.
 */
#ifndef UREC_UNWIND_BPF_H
#define UREC_UNWIND_BPF_H

/* Set by the recorder: `-g dwarf` probes try the in-kernel walk first. */
const volatile __u8 kernel_dwarf = 0;

#define KD_BLOCK_WORDS 1024   /* u32 words per kd_words value (4 KiB) */
#define KD_MAX_TABLES 4096    /* table ids */
#define KD_MAX_MAPPINGS 256   /* executable mappings per process (a power of two) */
#define KD_MAX_PROCS 2048     /* processes with mappings at once */
#define KD_MAP_STEPS 9        /* bisection steps over KD_MAX_MAPPINGS + 1 positions */
#define KD_ROW_STEPS 17       /* over the rows of one 64 KiB page (at most 65,537) */
#define KD_WINDOW 512         /* bytes above sp read at once (a power of two) */
#define KD_WIN_OFF 8192       /* the window in the scratch buffer: past the frames (and the
			       * Python block before them), where only put_dwarf's copy, made
			       * after the walk gave up, writes */
#define KD_STATE_OFF (KD_WIN_OFF + KD_WINDOW) /* the walk's state (struct kd_walk), in the
					       * scratch buffer: the stack of the programs
					       * cannot spare its 96 bytes */

/* kd_stats indexes: how walks ended. Keep in sync with record/src/kunwind/mod.rs. */
#define KD_S_WALKS 0          /* walks started */
#define KD_S_COMPLETE 1       /* written: end of stack */
#define KD_S_TOO_DEEP 2       /* written: cut at the depth limit */
#define KD_S_NO_PROC 3        /* fell back: no mappings of the process */
#define KD_S_STALE 4          /* fell back: mappings older than the process's exec */
#define KD_S_UNKNOWN 5        /* fell back: pc in no mapping (or beyond a table's 4 GiB) */
#define KD_S_NOT_LOADED 6     /* fell back: the binary's table is not loaded */
#define KD_S_FALLBACK_ROW 7   /* fell back: a row the table cannot express */
#define KD_S_READ_FAILED 8    /* fell back: a stack read failed */
#define KD_S_BAD 9            /* fell back: no progress, CFA below sp, overflow */
#define KD_S_EXACT_DEPTH 10   /* fell back: complete with exactly stack_depth frames */
#define KD_S_FRAMES 11        /* frames written by the walks that were */
#define KD_S_N 12

/* One walk step's result (internal). */
#define KD_CALLER 0           /* regs now the caller's; ra in kd_walk.ra */
#define KD_END 1              /* no caller: the stack is complete */
#define KD_INTERRUPTED 100    /* regs now those a signal interrupted; their ip in kd_walk.ra */

/* A signal frame's ucontext (at sp): where uc_mcontext holds rbp, rsp and rip (walk.rs
 * SIGNAL_BP, SIGNAL_SP, SIGNAL_IP). */
#define KD_SIGNAL_BP (40 + 10 * 8)
#define KD_SIGNAL_SP (40 + 15 * 8)
#define KD_SIGNAL_IP (40 + 16 * 8)

struct kd_block {
	__u32 w[KD_BLOCK_WORDS];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1); /* set at load: the recorder's word budget / KD_BLOCK_WORDS */
	__type(key, __u32);
	__type(value, struct kd_block);
} kd_words SEC(".maps");

/* Where a table lies in kd_words (word indexes), as unwind-table's UnwindTable arrays. */
struct kd_table {
	__u32 pages;  /* npages + 1 words: first row of each 64 KiB page, then nrows */
	__u32 npages;
	__u32 rows;   /* nrows words: (address & 0xffff) << 16 | rule index */
	__u32 nrows;
	__u32 rules;  /* nrules rule words */
	__u32 nrules;
	__u32 loaded; /* the load's generation, never reused; 0: the id is known but its table
		       * is not (or no longer) in kd_words */
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, KD_MAX_TABLES);
	__type(key, __u32);
	__type(value, struct kd_table);
} kd_tables SEC(".maps");

struct kd_mapping {
	__u64 start;
	__u64 end;
	__u64 bias;   /* actual minus stated address */
	__u32 table;  /* kd_tables index */
	__u32 _pad;
};

struct kd_proc {
	__u64 as_of;  /* CLOCK_MONOTONIC ns: the recorder's view of the mappings at that time */
	__u32 n;      /* mappings, sorted by start, non-overlapping */
	__u32 _pad;
	struct kd_mapping m[KD_MAX_MAPPINGS];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* memory only for the processes present */
	__uint(max_entries, KD_MAX_PROCS);
	__type(key, __u32);
	__type(value, struct kd_proc);
} kd_procs SEC(".maps");

#define KD_CACHE 4096 /* kd_cache slots per CPU (a power of two): 64 KiB */

struct kd_cached {
	__u32 id;     /* table id + 1 (0: empty) */
	__u32 gen;    /* kd_table.loaded when cached */
	__u32 svma;
	__u32 rule;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KD_CACHE);
	__type(key, __u32);
	__type(value, struct kd_cached);
} kd_cache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u64);
} kd_execs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KD_S_N);
	__type(key, __u32);
	__type(value, __u64);
} kd_stats SEC(".maps");

/*
 * Every exec, of any process (a process not yet traced may be by the time its old mappings
 * reach kd_procs): its time, which kd_procs entries of that tgid must not predate.
 */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(urec_kd_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u64 now = bpf_ktime_get_ns();

	bpf_map_update_elem(&kd_execs, &tgid, &now, BPF_ANY);
	return 0;
}

static __always_inline void kd_count(__u32 what, __u64 n)
{
	__u64 *c = bpf_map_lookup_elem(&kd_stats, &what);

	if (c)
		*c += n;
}

/*
 * The registers and progress of one walk: scalars only, so that a global function can take it
 * (kd_frame), the pointers the walk needs travelling beside it (struct kd_loop).
 */
struct kd_walk {
	__u64 ri;                   /* struct return_instance *: pending uretprobes, innermost
				     * first */
	__u64 tramp;                /* the uretprobe trampoline address (0: none pending) */
	__u64 ip;
	__u64 sp;
	__u64 bp;
	__u64 sp0;                  /* the probe's sp: reads below it fail, as in a copy */
	__u64 wlen;                 /* bytes of the window read */
	__u64 ra;
	__u32 off;                  /* frames start here in the buffer */
	__u32 n;                    /* frames stored */
	__u32 limit;
	__u32 first;
	__u32 end;                  /* KD_S_* once the walk stopped */
	__s32 map;                  /* the mapping of the next lookup, -1: not looked up */
};

/* bpf_loop's context. */
struct kd_loop {
	struct scratch *s;
	struct kd_proc *proc;
};

/*
 * Word i of kd_words (0 past its end, where no table lies). Global: an index the verifier sees
 * used for a map value access becomes precise, and an inlined bisection then doubles its
 * states at every step; a global function's argument never does.
 */
__noinline __u32 kd_word(__u32 i)
{
	__u32 block = i / KD_BLOCK_WORDS;
	struct kd_block *b = bpf_map_lookup_elem(&kd_words, &block);

	if (!b)
		return 0;
	return b->w[i & (KD_BLOCK_WORDS - 1)];
}

/*
 * The index of the mapping holding pc, or -1 (walk.rs's `table_for`). This and kd_rule are
 * global functions: verified once each, on their own, instead of once per state of the walk's
 * loop body (inlined, their bisections multiplied the walk's states past the verifier's
 * million instructions).
 */
__noinline int kd_find(struct kd_proc *p, __u64 pc)
{
	__u32 lo = 0, hi;

	if (!p)
		return -1;
	hi = p->n;
	if (hi > KD_MAX_MAPPINGS)
		hi = KD_MAX_MAPPINGS;
	for (int i = 0; i < KD_MAP_STEPS && lo < hi; i++) {
		__u32 mid = (lo + hi) / 2;

		if (p->m[mid & (KD_MAX_MAPPINGS - 1)].start <= pc)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == 0)
		return -1;
	if (pc >= p->m[(lo - 1) & (KD_MAX_MAPPINGS - 1)].end)
		return -1;
	return (lo - 1) & (KD_MAX_MAPPINGS - 1);
}

/*
 * The rule word for pc (UnwindTable::lookup on pc - bias), or -KD_S_* to stop. The page by the
 * high 16 bits of the stated address, then the last row of the page whose offset is at most
 * the low 16 bits; past the last page, the last row.
 */
__noinline __s64 kd_rule(struct kd_proc *p, __u64 pc, int hint)
{
	int i = hint;
	__u32 lo, hi, row, low, page, id, rule, slot;
	struct kd_cached *c;
	struct kd_table *t;
	__u64 svma;

	if (!p)
		return -KD_S_UNKNOWN;
	/* The caller's mapping index when it already looked pc up (a return address is checked
	 * before it is stepped from), else a bisection. */
	if (i < 0 || pc < p->m[i & (KD_MAX_MAPPINGS - 1)].start ||
	    pc >= p->m[i & (KD_MAX_MAPPINGS - 1)].end)
		i = kd_find(p, pc);
	if (i < 0)
		return -KD_S_UNKNOWN;
	id = p->m[i & (KD_MAX_MAPPINGS - 1)].table;
	svma = pc - p->m[i & (KD_MAX_MAPPINGS - 1)].bias;
	t = bpf_map_lookup_elem(&kd_tables, &id);
	if (!t || !t->loaded || !t->nrows)
		return -KD_S_NOT_LOADED;
	if (svma >> 32)
		return -KD_S_UNKNOWN;
	slot = (((__u32)svma * 0x9e3779b1U) >> 20 ^ id) & (KD_CACHE - 1);
	c = bpf_map_lookup_elem(&kd_cache, &slot);
	if (c && c->id == id + 1 && c->gen == t->loaded && c->svma == (__u32)svma)
		return c->rule;
	page = (__u32)svma >> 16;
	low = (__u32)svma & 0xffff;
	if (page >= t->npages) {
		row = kd_word(t->rows + t->nrows - 1);
	} else {
		lo = kd_word(t->pages + page);
		hi = kd_word(t->pages + page + 1);
		__u32 l = lo, h = hi;

		for (int k = 0; k < KD_ROW_STEPS && l < h; k++) {
			__u32 mid = l + (h - l) / 2;

			if ((kd_word(t->rows + mid) >> 16) <= low)
				l = mid + 1;
			else
				h = mid;
		}
		if (l == lo || l > hi)
			return -KD_S_UNKNOWN;
		row = kd_word(t->rows + l - 1);
	}
	if ((row & 0xffff) >= t->nrules)
		return 0; /* an unknown rule reads as Fallback (Rule::from_word) */
	rule = kd_word(t->rules + (row & 0xffff));
	if (c) {
		c->id = id + 1;
		c->gen = t->loaded;
		c->svma = (__u32)svma;
		c->rule = rule;
	}
	return rule;
}

/*
 * What a stack word `v` equal to the trampoline, read at `addr`, stood for: the return address
 * of the pending uretprobe (of the first UREC_MAX_PENDING, innermost first, from `ri`) whose
 * slot is `addr`; `v` itself when none is.
 */
__noinline __u64 kd_pending(__u64 ri, __u64 addr, __u64 v)
{
	struct return_instance *r = (struct return_instance *)ri;

	for (int i = 0; i < UREC_MAX_PENDING && r; i++) {
		if (BPF_CORE_READ(r, stack) == addr)
			return BPF_CORE_READ(r, orig_ret_vaddr);
		r = BPF_CORE_READ(r, next);
	}
	return v;
}

/* The stack word at addr as the copy would give it: -1 where the copy could not. */
static __always_inline int kd_read(struct kd_walk *w, struct scratch *s, __u64 addr, __u64 *v)
{
	__u64 k;

	if (!s || addr < w->sp0)
		return -1;
	k = addr - w->sp0;
	if (!(addr & 7) && k + 8 <= w->wlen)
		*v = *(__u64 *)(s->buf + KD_WIN_OFF + (k & (KD_WINDOW - 8)));
	else if (bpf_probe_read_user(v, 8, (void *)addr))
		return -1;
	if (w->tramp && *v == w->tramp)
		*v = kd_pending(w->ri, addr, *v);
	return 0;
}

/* walk.rs's frame_pointer: CFA = rbp + 16, rbp saved at [rbp]. */
static __always_inline __u32 kd_frame_pointer(struct kd_walk *w, struct scratch *s,
						bool zero_ends)
{
	__u64 sp = w->sp, bp = w->bp, new_sp, new_bp, ra;

	if (zero_ends && bp == 0)
		return KD_END;
	new_sp = bp + 16;
	if (new_sp < bp || new_sp <= sp)
		return KD_S_BAD;
	if (kd_read(w, s, bp, &new_bp) || kd_read(w, s, new_sp - 8, &ra))
		return KD_S_READ_FAILED;
	if (ra == 0)
		return KD_END;
	w->ip = ra;
	w->sp = new_sp;
	w->bp = new_bp;
	w->ra = ra;
	return KD_CALLER;
}

/*
 * walk.rs's `evaluated` (framehop's path for the rules its cache cannot hold: PLT entries and
 * CFA = rbp + N other than a plain frame pointer): 1 where it gives up, after which the
 * frame-pointer rule is taken. User addresses are below 2^47, so the i64 conversions of the
 * Rust code cannot fail here; negative results still do.
 */
static __always_inline __u32 kd_evaluated(struct kd_walk *w, struct scratch *s, __u32 kind,
					  __s64 cfa_off, __u32 aux)
{
	__s64 base, cfa, slot;
	__u64 new_bp = w->bp, ra, v;

	if ((__s64)w->sp < 0 || (__s64)w->bp < 0)
		return 1;
	if (kind == 4) /* Plt */
		base = (__s64)w->sp + ((w->ip & 15) >= aux ? 8 : 0);
	else
		base = (__s64)w->bp;
	cfa = base + cfa_off;
	if (cfa < 0)
		return 1;
	if (kind != 4 && aux) {
		slot = cfa + (__s64)(__s8)aux * 8;
		if (slot >= 0 && !kd_read(w, s, (__u64)slot, &v))
			new_bp = v;
	}
	if (cfa < 8 || kd_read(w, s, (__u64)cfa - 8, &ra))
		return 1;
	if ((__u64)cfa == w->sp && ra == w->ip)
		return 1;
	if (!w->first && (__u64)cfa < w->sp)
		return 1;
	w->ip = ra;
	w->sp = (__u64)cfa;
	w->bp = new_bp;
	w->ra = ra;
	return 0;
}

/*
 * Applies one rule word to the registers (walk.rs's `step`): KD_CALLER (w->ra: the return
 * address, possibly 0: the end), KD_END, or a KD_S_* reason to stop.
 */
static __always_inline __u32 kd_apply(struct kd_walk *w, struct scratch *s, __u32 word)
{
	__u32 kind = word & 0xf;
	__u32 aux = (word >> 4) & 0xff;
	__s64 cfa_off = (__s64)((__s32)word >> 12) * 8;
	__u64 sp = w->sp, bp = w->bp, new_sp, new_bp = bp, ra, v;
	bool first = w->first;

	switch (kind) {
	case 1: /* EndOfStack */
		return KD_END;
	case 2: /* CfaRsp */
		new_sp = sp + (__u64)cfa_off;
		if ((cfa_off >= 0 && new_sp < sp) || (cfa_off < 0 && new_sp >= sp))
			return KD_S_BAD; /* u64::checked_add of the sign-extended offset */
		if (aux) {
			__s64 off = (__s64)(__s8)aux * 8;
			__u64 slot = new_sp + (__u64)off;

			if ((off < 0 && slot > new_sp) || (off > 0 && slot < new_sp))
				return KD_S_BAD;
			if (!kd_read(w, s, slot, &v))
				new_bp = v;
			else if (!(first && slot < sp))
				return KD_S_READ_FAILED;
		}
		break;
	case 3: /* CfaRbp */
		if (cfa_off == 16 && aux == 0xfe)
			return kd_frame_pointer(w, s, true);
		/* fall through */
	case 4: /* Plt */
		if (!kd_evaluated(w, s, kind, cfa_off, aux))
			return KD_CALLER;
		return kd_frame_pointer(w, s, true);
	case 5: /* NoCfi */
		if (!first)
			return kd_frame_pointer(w, s, false);
		new_sp = sp + 8;
		if (new_sp < sp)
			return KD_S_BAD;
		break;
	case 6: /* SignalFrame: the trampoline a handler returned into; sp is the ucontext */
		if (kd_read(w, s, sp + KD_SIGNAL_BP, &new_bp) ||
		    kd_read(w, s, sp + KD_SIGNAL_SP, &new_sp) ||
		    kd_read(w, s, sp + KD_SIGNAL_IP, &ra))
			return KD_S_READ_FAILED;
		if (ra == 0)
			return KD_END;
		w->ip = ra;
		w->sp = new_sp;
		w->bp = new_bp;
		w->ra = ra;
		return KD_INTERRUPTED;
	default: /* Fallback, and kinds this walk does not know */
		return KD_S_FALLBACK_ROW;
	}
	if (kd_read(w, s, new_sp - 8, &ra))
		return KD_S_READ_FAILED;
	if (ra == 0)
		return KD_END;
	if (new_sp == sp && ra == w->ip)
		return KD_S_BAD;
	w->ip = ra;
	w->sp = new_sp;
	w->bp = new_bp;
	w->ra = ra;
	return KD_CALLER;
}

/*
 * One frame of walk.rs's `walk`: 1 when the walk stopped (w->end says why). Global, so that
 * bpf_loop's callback is one call: the verifier checks a callback's body until its states
 * converge, and inlined, the walk's exact frame count and registers made every iteration a
 * new state.
 */
__noinline long kd_frame(struct kd_walk *w, struct scratch *s, struct kd_proc *p)
{
	__u64 lookup;
	__s64 word;
	__u32 r;

	if (!w || !s)
		return 1;
	/* A return address is looked up one byte back (the call may end its function). */
	lookup = w->first ? w->ip : w->ip - 1;
	word = kd_rule(p, lookup, w->map);
	if (word < 0) {
		w->end = (__u32)-word;
		return 1;
	}
	r = kd_apply(w, s, (__u32)word);
	if (r == KD_END || (r == KD_CALLER && w->ra == 0)) {
		w->end = KD_S_COMPLETE;
		return 1;
	}
	if (r != KD_CALLER && r != KD_INTERRUPTED) {
		w->end = r;
		return 1;
	}
	/* The interrupted frame is looked up at its ip, as the first frame is (walk.rs). */
	__u32 exact = r == KD_INTERRUPTED;
	__u64 at = exact ? w->ra : w->ra - 1;
	/* Most callers are in the binary of their callee: its mapping is tried first. */
	__s32 m = w->map;

	if (m < 0 || !p || at < p->m[m & (KD_MAX_MAPPINGS - 1)].start ||
	    at >= p->m[m & (KD_MAX_MAPPINGS - 1)].end)
		m = kd_find(p, at);
	w->map = m;
	if (m < 0) {
		w->end = KD_S_UNKNOWN;
		return 1;
	}
	if (w->n >= w->limit) {
		w->end = KD_S_TOO_DEEP;
		return 1;
	}
	*(__u64 *)(s->buf + ((w->off + (w->n & 255) * 8) & SIZE_MASK)) = w->ra;
	w->n++;
	w->first = exact;
	return 0;
}

static long kd_step(__u64 i, struct kd_loop *c)
{
	struct scratch *s = c->s;

	if (!s)
		return 1;
	return kd_frame((struct kd_walk *)(s->buf + KD_STATE_OFF), s, c->proc) ? 1 : 0;
}

/*
 * Walks the current task's user stack from the probe's registers into the scratch buffer at
 * `off` (after `leaf`, the probed function, when not 0), at most `depth` frames: the number
 * of frames written, or 0 when the event must take the copy-and-unwind path (see the top of
 * this file). Global: verified once for every program that calls it.
 */
/*
 * Returned (with no frames) when the process has no entry or a stale one: the copy it falls
 * back to wakes the recorder, which writes the entry as soon as it reads it
 * (kunwind::KernelUnwind::early), instead of after the next poll: a program such as sqlite3
 * makes thousands of probed calls in 10 ms, each a copy of kilobytes until then.
 */
#define KD_ASK (1U << 16)

__noinline __u32 kd_stack(struct pt_regs *ctx, struct scratch *s, __u32 off, __u64 leaf,
			  __u32 depth)
{
	struct task_struct *task = bpf_get_current_task_btf();
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct kd_loop c = {};
	struct kd_walk *w;
	__u64 gen, *exec;

	if (!s || !ctx)
		return 0;
	kd_count(KD_S_WALKS, 1);
	if (depth > UREC_MAX_DEPTH)
		depth = UREC_MAX_DEPTH;
	if (depth < 2) {
		kd_count(KD_S_EXACT_DEPTH, 1);
		return 0;
	}
	c.proc = bpf_map_lookup_elem(&kd_procs, &tgid);
	if (!c.proc) {
		kd_count(KD_S_NO_PROC, 1);
		return KD_ASK;
	}
	gen = BPF_CORE_READ(task, group_leader, start_time);
	exec = bpf_map_lookup_elem(&kd_execs, &tgid);
	if (exec && *exec > gen)
		gen = *exec;
	if (c.proc->as_of < gen) {
		kd_count(KD_S_STALE, 1);
		return KD_ASK;
	}
	c.s = s;
	w = (struct kd_walk *)(s->buf + KD_STATE_OFF);
	__builtin_memset(w, 0, sizeof(*w));
	w->off = off & BODY_MASK;
	w->limit = depth;
	__u64 ip = ctx->ip;

	w->ip = ip;
	w->sp = ctx->sp;
	w->bp = ctx->bp;
	w->sp0 = w->sp;
	w->first = 1;
	w->ri = (__u64)BPF_CORE_READ(task, utask, return_instances);
	if (w->ri) {
		struct xol_area *area = BPF_CORE_READ(task, mm, uprobes_state.xol_area);

		w->tramp = area ? BPF_CORE_READ(area, vaddr) : 0;
	}
	w->map = kd_find(c.proc, w->ip);
	if (w->map < 0) {
		kd_count(KD_S_UNKNOWN, 1);
		return 0;
	}
	/* One read serves the innermost frames (as put_fp_stack's window). */
	w->wlen = KD_WINDOW;
	if (bpf_probe_read_user(s->buf + KD_WIN_OFF, KD_WINDOW, (void *)w->sp)) {
		__u64 rest = 4096 - (w->sp & 4095);

		w->wlen = 0;
		if (rest < KD_WINDOW &&
		    !bpf_probe_read_user(s->buf + KD_WIN_OFF, rest & (KD_WINDOW - 1), (void *)w->sp))
			w->wlen = rest;
	}
	/* (Offsets from locals: what is read back from the buffer has lost its bounds.) */
	off &= BODY_MASK;
	if (leaf) {
		*(__u64 *)(s->buf + off) = leaf;
		*(__u64 *)(s->buf + off + 8) = ip;
		w->n = 2;
	} else {
		*(__u64 *)(s->buf + off) = ip;
		w->n = 1;
	}
	bpf_loop(UREC_MAX_DEPTH + 1, kd_step, &c, 0);
	if (w->end == KD_S_COMPLETE && w->n >= depth)
		w->end = KD_S_EXACT_DEPTH;
	kd_count(w->end, 1);
	if (w->end != KD_S_COMPLETE && w->end != KD_S_TOO_DEEP)
		return 0;
	kd_count(KD_S_FRAMES, w->n);
	/* Hides the range from clang (see put_dwarf). */
	__u32 n = w->n & 255;

	asm volatile("" : "+r"(n));
	return n;
}

#endif

/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The ABI between urec's BPF programs and the recorder: the ring-buffer record layout and the
 * per-probe configuration the programs read. `bpf/src/abi.rs` mirrors every struct here with
 * `#[repr(C)]` and checks the sizes; change both together.
 *
 * A ring-buffer record is exact-size:
 *
 *     struct urec_event            (40 bytes)
 *     goroutine                    (8 bytes, only with UREC_F_GOROUTINE: a Go event's g)
 *     args                         (args_len bytes, a multiple of 8)
 *     frames                       (nframes * 8 bytes, innermost first)
 *
 * or, when UREC_F_DWARF is set (a `-g dwarf` probe; nframes is then 0), instead of frames:
 *
 *     struct urec_dwarf            (56 bytes: registers, trampoline, sizes)
 *     struct urec_pending          (npending * 16 bytes, innermost first)
 *     stack                        (stack_len bytes copied from sp upward; not padded)
 *
 * or, when UREC_F_STACK_ID is set (frames walked in the kernel and stored in the `stacks` map;
 * nframes still counts them), instead of frames:
 *
 *     stack id                     (8 bytes: the frames' hash, their key in `stacks`)
 *
 * With UREC_F_PYTHON (a stack was captured in a process `py_procs` names), a Python block sits
 * between the args and the frames (or the DWARF part):
 *
 *     struct urec_py_head          (8 bytes)
 *     struct urec_py_frame         (nframes * 32 bytes, innermost first)
 *
 * Each fetched argument of this event's kind takes 8 bytes (the raw value, zero-extended from
 * the fetch size), except strings: an 8-byte descriptor (length in the low 32 bits, bit 32 set
 * when the string was longer than UREC_STR_MAX) followed by the bytes, padded to 8. An argument
 * whose read faulted has its bit set in `fault_mask` (its slot is still there).
 */
#ifndef UREC_H
#define UREC_H

/* Limits. Keep them in sync with abi.rs. */
#define UREC_MAX_ARGS 8      /* fetched arguments per probe */
#define UREC_MAX_OPS 8       /* fetch operations per argument */
#define UREC_STR_MAX 256     /* string bytes kept per argument */
#define UREC_MAX_DEPTH 127   /* --stack-depth upper bound (the kernel's default limit) */
#define UREC_MAX_STACK_SIZE 65536 /* --stack-size upper bound (bytes of stack copied) */
#define UREC_MAX_PENDING 16  /* pending uretprobe return addresses sent per copy */

/* urec_event.kind */
/* Go calls waiting for their return at once, all processes together (urec.bpf.c, "Go"):
 * 131,072 × (16-byte key + 16-byte value + the hash table's overhead) ≈ 10 MiB of kernel
 * memory, enough for 100,000 goroutines each inside a probed call. */
#define UREC_GO_CALLS 131072

/* Ring pressure (urec.bpf.c, "Sampling"): stacks and args of one call in 2^shift at most
 * 2^UREC_MAX_SHIFT. */
#define UREC_MAX_SHIFT 10

#define UREC_KIND_ENTRY 0
#define UREC_KIND_RETURN 1
/* Not an event: a snapshot of one Python code object's memory (struct urec_py_code after the
 * header; `probe` is UREC_PY_CODE_PROBE, `pid` the tgid). See "Python code snapshots" below. */
#define UREC_KIND_PYCODE 2
#define UREC_PY_CODE_PROBE 0xffffffffU

/* urec_event.flags */
#define UREC_F_LATENCY 1     /* latency_ns is valid */
/* flag 2 is retired (was: no stack); readers ignore it */
#define UREC_F_CALLER_ADDED 4 /* frames[1] is the return address read at [sp] */
#define UREC_F_FUNC_ADDED 8  /* frames[0] is the function's address (return-only probes) */
#define UREC_F_DWARF 16      /* a struct urec_dwarf and a stack copy follow the args */
#define UREC_F_GOROUTINE 32  /* a Go event: the goroutine (its g) follows the header, 8 bytes,
			      * before the args */
#define UREC_F_PYTHON 64     /* a Python block (struct urec_py_head + frames) follows the args */
#define UREC_F_STACK_ID 128  /* an 8-byte stack id stands for the frames ("Stack ids" below) */

struct urec_event {
	__u32 probe;      /* probe id = attach cookie */
	__u8 kind;        /* UREC_KIND_* */
	__u8 flags;       /* UREC_F_* */
	__u8 nframes;     /* user stack frames after the args (at most UREC_MAX_DEPTH + 2) */
	__u8 weight_shift; /* the call was kept as one in 2^weight_shift (ring pressure) */
	__u32 pid;        /* tgid */
	__u32 tid;
	__u32 cpu;
	__u16 args_len;   /* bytes of argument payload */
	__u16 fault_mask; /* bit i: argument i (of this kind) faulted */
	__u64 time_ns;    /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u64 latency_ns; /* return events of session probes: entry to return */
};

/*
 * Stack ids (issue 31): a stack walked in the kernel (frame pointers or the in-kernel DWARF
 * walk) is stored once in `stacks` under a 64-bit hash of its frames (urec.bpf.c
 * put_stack_id) and its events carry the hash. The recorder, meeting an id it lacks, takes
 * every stored stack out of `stacks` in one batch (lookup and delete) and adds their ids to
 * `stacks_known`; an id found there is not stored again. An entry is written before the event
 * that names it is submitted, so the recorder, reading events in ring order, always finds it;
 * when `stacks` is full the frames travel in the event as before.
 */
#define UREC_STACK_SLOTS (UREC_MAX_DEPTH + 2) /* frames a stored stack holds at most */
#define UREC_STACK_STORE 4096                 /* stacks stored and not yet read, at most */
#define UREC_STACKS_KNOWN 262144              /* stack ids the recorder has, at most */

struct urec_stack {
	__u64 frames[UREC_STACK_SLOTS]; /* innermost first; `n` are valid */
	__u64 n;                        /* the frames (the recorder drains the map in batches) */
};

/* urec_dwarf.status */
#define UREC_D_HOLES 1       /* some pages of the copy could not be read: see `holes` */
#define UREC_D_READ_FAILED 2 /* no stack bytes could be read at all */

/* The registers an x86-64 CFI unwind starts from, and what a pending uretprobe hid. */
struct urec_dwarf {
	__u64 ip;
	__u64 sp;         /* the stack copy starts here */
	__u64 bp;
	__u64 trampoline; /* the uretprobe trampoline address of this mm (0: none yet) */
	__u64 leaf;       /* return-only probes: the probed function's address, else 0 */
	__u32 stack_len;  /* bytes of stack copied */
	__u16 npending;   /* struct urec_pending entries */
	__u16 status;     /* UREC_D_* */
	__u32 holes;      /* bit i: chunk i of the copy faulted (zeros); chunk 0 runs from sp to
			   * the next page boundary, chunk i > 0 is the i-th page after it */
	__u32 _pad;
};

/* One `current->utask->return_instances` entry: the slot at `slot` held `ret` before the
 * kernel replaced it by the trampoline. */
struct urec_pending {
	__u64 slot;
	__u64 ret;
};

/* Fetch operations: a tiny accumulator machine, one program per argument. */
#define UREC_OP_REG 1      /* v = regs[imm] (pt_regs as an array of u64) */
#define UREC_OP_SPREL 2    /* v = *(u64 *)(sp + imm), a user read ($stackN, argN beyond 6) */
#define UREC_OP_IMM 3      /* v = imm */
#define UREC_OP_FUNCREL 4  /* v = address of the probed function + imm (globals, @+OFF) */
#define UREC_OP_DEREF 5    /* v = *(uN *)(v + imm), N = size bytes, a user read */
#define UREC_OP_ADD 6      /* v = v + imm (the last step of a string's address) */
#define UREC_OP_COMM 7     /* the task's comm (string arguments only) */
#define UREC_OP_ADDREG 8   /* v = v + regs[imm] * size: an index register, as in USDT's
			    * `-8@(%rax,%rdi,8)` (an array element), which no other op can add */

struct urec_fetch_op {
	__u8 op;
	__u8 size;        /* bytes read by UREC_OP_DEREF: 1, 2, 4 or 8; UREC_OP_ADDREG's scale */
	__u8 _pad[6];
	__s64 imm;
};

struct urec_arg_cfg {
	__u8 nops;
	__u8 at_return;   /* fetched on return events, else on entry events */
	__u8 is_string;   /* v is the address of a NUL-terminated string */
	__u8 _pad[5];
	struct urec_fetch_op ops[UREC_MAX_OPS];
};

/* urec_probe_cfg.flags */
#define UREC_P_ADD_CALLER 1 /* entry at a function start the kernel does not fix up: add [sp] */
#define UREC_P_DWARF 2      /* capture registers + a stack copy instead of a frame-pointer walk */
#define UREC_P_KERNEL_CALLER 4 /* entry stacks get [sp] as perf's callchain would (the probed
				* instruction is `push %rbp`: is_uprobe_at_func_entry()) */
#define UREC_P_GO 8         /* Go code: events carry the goroutine (r14, Go's register ABI) */

/*
 * A predicate (`if EXPR`): a postfix program over a stack of booleans. A comparison pushes
 * `value(args[arg]) OP imm`; UREC_PR_AND / UREC_PR_OR pop two and push one; the call is
 * recorded when the last value is true. `!` does not exist here: the recorder pushes it down
 * into the comparisons (De Morgan). Integer operands are brought to their type first:
 * `v = (v << shl) >> shr`, the right shift arithmetic when `is_signed`; string operands compare
 * their bytes and NUL with strs[str - 1] (str_len bytes, NUL-padded). A read that faults makes
 * its comparison false.
 */
#define UREC_MAX_PRED_OPS 16  /* steps of a predicate (comparisons at most 8) */
#define UREC_MAX_PRED_ARGS 4  /* operands (fetch programs) of a predicate */
#define UREC_MAX_PRED_STRS 4  /* string constants of a predicate */
#define UREC_PRED_STR 64      /* bytes of a string constant, its NUL included */

/* urec_pred_op.op */
#define UREC_PR_EQ 1
#define UREC_PR_NE 2
#define UREC_PR_LT 3
#define UREC_PR_LE 4
#define UREC_PR_GT 5
#define UREC_PR_GE 6
#define UREC_PR_AND 7
#define UREC_PR_OR 8

struct urec_pred_op {
	__u8 op;          /* UREC_PR_* */
	__u8 arg;         /* operand: index in urec_pred.args */
	__u8 shl;
	__u8 shr;
	__u8 is_signed;   /* signed shift and comparison */
	__u8 str;         /* 0: integer; else 1 + index in urec_pred.strs */
	__u8 str_len;     /* bytes of the string constant, below UREC_PRED_STR */
	__u8 _pad;
	__u64 imm;        /* the integer constant, in the operand's type */
};

struct urec_pred {
	__u8 _pad[8];     /* (the number of steps is urec_probe_cfg.npred) */
	struct urec_pred_op ops[UREC_MAX_PRED_OPS];
	struct urec_arg_cfg args[UREC_MAX_PRED_ARGS];
	__u64 strs[UREC_MAX_PRED_STRS][UREC_PRED_STR / 8]; /* bytes (u64s for the skeleton) */
};

/*
 * A probe's in-kernel counts (the `aggs` per-CPU array, indexed by probe id): what no ring
 * overflow can drop. The recorder sums them over CPUs (min/max: of the CPUs with latencies).
 */
struct urec_agg {
	__u64 calls;      /* accepted calls: entries (returns for return-only probes) */
	__u64 returns;    /* returns of counted calls (entry+return probes) */
	__u64 filtered;   /* calls the predicate rejected */
	__u64 sampled;    /* calls whose events were not written (one-in-N under pressure) */
	__u64 lat_count;  /* latencies measured */
	__u64 lat_total;
	__u64 lat_min;    /* valid when lat_count > 0 */
	__u64 lat_max;
};

/* Latency histograms: UREC_HIST_TOP_EXP caps the log-linear layout (format/src/log_linear.rs). */
#define UREC_HIST_TOP_EXP 44

struct urec_probe_cfg {
	__u8 flags;
	__u8 nargs;
	__u8 npred;       /* steps of `pred`; 0: no predicate (here, in the cache line every
			   * event reads anyway) */
	__u8 caller_slot; /* UREC_P_*_CALLER: the return address is at [sp + 8 * caller_slot]
			   * (words a moved entry site's skipped instructions pushed/reserved) */
	__u32 stack_size; /* UREC_P_DWARF: the most bytes of stack to copy, from sp to the end
			   * of the stack (0: none; masked to below UREC_MAX_STACK_SIZE) */
	struct urec_arg_cfg args[UREC_MAX_ARGS];
	struct urec_pred pred;
};

/*
 * Python frames (issue 33). The recorder puts a process running a known CPython in `py_procs`
 * (tgid -> struct urec_py_proc) and the struct offsets of its version in `py_layouts`; an event
 * that captures a stack in such a process walks the probed thread's interpreter frame chain.
 */
#define UREC_PY_MAX_FRAMES 64  /* Python frames per event; deeper chains are TRUNCATED */
#define UREC_PY_MAX_THREADS 32 /* PyThreadStates searched for the probed thread */
#define UREC_PY_LAYOUTS 16     /* entries of `py_layouts` */
#define UREC_PY_WINDOW 128     /* bytes of a frame / of a code object read at once */

/* urec_py_head.status */
#define UREC_PY_TRUNCATED 1   /* the chain went on past UREC_PY_MAX_FRAMES */
#define UREC_PY_READ_FAILED 2 /* a read failed mid-walk; the frames so far are kept */
#define UREC_PY_NO_THREAD 4   /* a Python process, but no PyThreadState matched this thread */

struct urec_py_head {
	__u16 nframes;   /* struct urec_py_frame entries that follow, at most UREC_PY_MAX_FRAMES */
	__u16 status;    /* UREC_PY_* bits */
	__u32 _pad;
};

#define UREC_PY_INSTR_NONE 0x3fffffff
#define UREC_PY_ENTRY (1U << 31)

struct urec_py_frame {            /* innermost first, 32 bytes */
	__u64 code;       /* the code object (f_code / f_executable) */
	__u64 qualname;   /* code->co_qualname: validation word */
	__u64 filename;   /* code->co_filename: validation word */
	__s32 firstlineno;/* code->co_firstlineno: validation word */
	__u32 instr;      /* bits 0..29: byte offset of the frame's instruction pointer from
			   * code + co_code_adaptive, UREC_PY_INSTR_NONE when below it or too large;
			   * bit 31 (UREC_PY_ENTRY): entry marker (3.11: is_entry; 3.12+: owner ==
			   * FRAME_OWNED_BY_CSTACK, a shim frame whose code fields are 0) */
};

/* `py_procs` value: where this process's interpreter lives. */
struct urec_py_proc {
	__u64 runtime;    /* the run-time address of _PyRuntime */
	__u32 layout;     /* index in `py_layouts` */
	__u32 _pad;
};

/* urec_py_layout.entry_kind */
#define UREC_PY_ENTRY_IS_ENTRY 0 /* 3.11: a bool at entry_offset */
#define UREC_PY_ENTRY_OWNER 1    /* 3.12+: the owner char at entry_offset == entry_value */

/*
 * The offsets the walk reads (urec_python::FrameOffsets, flattened). The frame fields all lie
 * below frame_size (<= UREC_PY_WINDOW), read at once; the code fields inside
 * [code_lo, code_lo + code_size) (code_size <= UREC_PY_WINDOW), read at once; the thread state's
 * fields the same way.
 */
struct urec_py_layout {
	__u64 interpreters_head; /* _PyRuntimeState.interpreters.head */
	__u64 threads_head;      /* PyInterpreterState.threads.head */
	__u64 tstate_next;       /* PyThreadState.next */
	__u64 thread_id;         /* PyThreadState.thread_id (pthread_self = fsbase) */
	__u64 cframe;            /* PyThreadState.cframe (via_cframe) */
	__u64 current_frame;     /* _PyCFrame.current_frame, or PyThreadState.current_frame */
	__u64 frame_previous;
	__u64 frame_code;
	__u64 frame_instr;
	__u64 entry_offset;      /* is_entry or owner */
	__u64 frame_size;
	__u64 code_lo;
	__u64 code_size;
	__u64 code_qualname;     /* offsets from the code object's start */
	__u64 code_filename;
	__u64 code_firstlineno;
	__u64 code_adaptive;
	__u64 ts_lo;             /* the thread state's thread_id and cframe (or current_frame) */
	__u64 ts_size;           /* lie in [ts_lo, ts_lo + ts_size), read at once */
	__u8 via_cframe;         /* 3.11/3.12: tstate->cframe->current_frame */
	__u8 entry_kind;         /* UREC_PY_ENTRY_* */
	__u8 entry_value;        /* FRAME_OWNED_BY_CSTACK */
	__u8 _pad[5];
	/* What a code snapshot reads (the words urec_python::read_code reads, and its objects). */
	__u64 code_linetable;    /* PyCodeObject.co_linetable */
	__u64 snap_lo;           /* the code object's bytes [snap_lo, snap_lo + snap_size) */
	__u64 snap_size;         /* (<= UREC_PY_WINDOW) hold qualname, filename, firstlineno and */
				 /* linetable */
	__u64 unicode_length;    /* PyASCIIObject.length */
	__u64 unicode_data;      /* sizeof(PyCompactUnicodeObject): the furthest data start */
	__u64 bytes_size;        /* PyBytesObject.ob_size */
	__u64 bytes_data;        /* PyBytesObject.ob_sval */
};

/*
 * Python code snapshots. Naming a frame needs the code object's qualname, filename and line
 * table, which live only in the process's heap; a process that exits before the recorder reads
 * its events takes them along. So when an event's Python stack holds code objects the recorder
 * has not named (`py_named`), the program sends, once per code object (rate-limited by
 * `py_sent`), a record of kind UREC_KIND_PYCODE, before the event itself:
 *
 *     struct urec_event    (40 bytes; kind UREC_KIND_PYCODE, probe UREC_PY_CODE_PROBE)
 *     struct urec_py_code  (32 bytes: the frame's CodeRef words)
 *     nregions × (struct urec_py_region, then `len` bytes padded to 8)
 *
 * The regions are raw copies of the process's memory: the code object's words, the qualname
 * and filename str objects (header and up to UREC_PY_SNAP_STR / UREC_PY_SNAP_FILE bytes in
 * all), the line table bytes object (header and up to UREC_PY_SNAP_LINES bytes of data; a
 * longer table is cut, lines past the cut unknown). A read that faults is retried at half the
 * size (the end of a mapping), up to 4 times, else the region is left out.
 */
#define UREC_PY_SNAP_STR 256    /* bytes of a qualname str object copied, header included */
#define UREC_PY_SNAP_FILE 512   /* bytes of a filename str object copied, header included */
#define UREC_PY_SNAP_LINES 4096 /* bytes of line table data copied (after its header) */
#define UREC_PY_SNAP_REGIONS 4

struct urec_py_code {
	__u64 code;
	__u64 qualname;
	__u64 filename;
	__s32 firstlineno;
	__u16 nregions;   /* struct urec_py_region entries that follow */
	__u16 _pad;
};

/* urec_py_region.what */
#define UREC_PY_R_CODE 0
#define UREC_PY_R_QUALNAME 1
#define UREC_PY_R_FILENAME 2
#define UREC_PY_R_LINETABLE 3

struct urec_py_region {
	__u64 addr;       /* where the bytes were read in the process */
	__u32 len;        /* bytes that follow (then padding to 8) */
	__u32 what;       /* UREC_PY_R_* (informational: the recorder reads by address) */
};

/*
 * The maps the recorder fills so that a code object is sent once (urec.bpf.c, "Python code
 * snapshots"). Key of `py_named`, `py_sent` (code: the code object's address) and
 * `py_stacks_named` (code: the stack hash).
 */
struct urec_py_code_key {
	__u32 tgid;
	__u32 _pad;
	__u64 code;
};

/*
 * The hashes both sides compute identically (urec.bpf.c py_mix / abi.rs py_mix):
 *   py_mix(h, v) = ((h ^ v) * 0x9e3779b97f4a7c15) ^ (that >> 29)
 *   a code's check (the `py_named` value): py_mix over UREC_PY_HASH_SEED, qualname, filename,
 *     (u32)firstlineno;
 *   a stack's hash (a `py_stacks_named` key): py_mix over UREC_PY_HASH_SEED, then for each
 *     frame as written (shims included), innermost first: code, qualname, filename,
 *     (u32)firstlineno.
 */
#define UREC_PY_HASH_SEED 0x7572656370790001ULL

#endif

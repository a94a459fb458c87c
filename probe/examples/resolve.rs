//! Resolves probe specs and prints what `urec record` would attach, without attaching:
//! `cargo run -p urec-probe --example resolve -- 'bash:readline' 'libc:malloc'`.

fn main() {
    let specs: Result<Vec<_>, _> = std::env::args()
        .skip(1)
        .map(|s| urec_probe::parse(&s))
        .collect();
    let resolved = specs.and_then(|s| urec_probe::resolve(&s, &Default::default()));
    match resolved {
        Ok(r) => {
            for p in r.probes {
                println!(
                    "{:3} {} {:?} {}+{:#x} vaddr={:#x} sym={} size={} kind={:?} insn={:?} \
                     push_rbp={} keeps_fp={}",
                    p.probe.id,
                    p.probe.name,
                    p.probe.specs,
                    p.probe.binary,
                    p.probe.offset.0,
                    p.probe.vaddr.0,
                    p.probe.symbol,
                    p.size,
                    p.probe.kind,
                    p.first_insn,
                    p.starts_with_push_rbp,
                    p.binary_keeps_frame_pointers
                );
                for (a, f) in p.probe.args.iter().zip(&p.fetches) {
                    println!(
                        "      {} = {:?} as {:?} at_return={}",
                        a.name,
                        f.lowered(),
                        a.ty,
                        a.at_return
                    );
                }
            }
            for w in r.warnings {
                println!("warning: {w}");
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    }
}

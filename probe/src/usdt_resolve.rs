//! Resolving `usdt:TARGET[:PROVIDER]:NAME` specs: the matching note sites become entry-only
//! probes at the sites' file offsets, with the semaphore's file offset for the kernel to
//! count, and `argN` replaced by the N-th operand of the note.

use std::collections::BTreeMap;

use urec_format::{ArgSpec, FileOffset, Probe, ProbeKind, StackMode};

use crate::elf::Binary;
use crate::insn::{self, KernelUprobes};
use crate::predicate::{self, Predicate, Typing};
use crate::resolve::{merge_kind, Resolution, ResolvedProbe, FRAME_POINTER_THRESHOLD};
use crate::spec::{Fetch, ProbeSpec};
use crate::usdt::{self, UsdtArg, UsdtProbe};
use crate::{glob, InsnHandling, SpecError};

/// Adds the probes of one USDT spec, merging with probes already at the same (binary,
/// offset) as [`crate::resolve`] does.
pub(crate) fn add(
    spec: &ProbeSpec,
    bin: &Binary,
    provider: Option<&str>,
    name: &str,
    kernel: &KernelUprobes,
    out: &mut Resolution,
    index: &mut BTreeMap<(crate::resolve::FileId, FileOffset), usize>,
) -> Result<(), SpecError> {
    let Resolution { probes, warnings } = out;
    let not_probeable = |why: String| SpecError::NotProbeable {
        spec: spec.text.clone(),
        why,
    };
    let all = usdt::probes(bin);
    if all.is_empty() {
        return Err(not_probeable(format!(
            "{} has no USDT probes (no .note.stapsdt section)",
            bin.path.display()
        )));
    }
    let sites: Vec<&UsdtProbe> = all
        .iter()
        .filter(|p| provider.is_none_or(|want| p.provider == want))
        .filter(|p| p.name == name || glob::matches(name, &p.name))
        .collect();
    if sites.is_empty() {
        let mut names: Vec<String> = all
            .iter()
            .map(|p| format!("{}:{}", p.provider, p.name))
            .collect();
        names.sort();
        names.dedup();
        return Err(not_probeable(format!(
            "no USDT probe {} in {}; it has {} (`urec list --usdt {}`)",
            match provider {
                Some(p) => format!("{p}:{name}"),
                None => name.to_string(),
            },
            bin.path.display(),
            urec_format::name_list(&names, 12),
            spec.target
        )));
    }
    if provider.is_none() && !glob::is_glob(name) {
        let mut providers: Vec<&str> = sites.iter().map(|p| p.provider.as_str()).collect();
        providers.sort_unstable();
        providers.dedup();
        if providers.len() > 1 {
            return Err(SpecError::Ambiguous {
                spec: spec.text.clone(),
                symbol: name.to_string(),
                candidates: providers
                    .iter()
                    .map(|p| format!("usdt:{}:{p}:{name}", spec.target))
                    .collect(),
            });
        }
    }
    // A provider:name with several sites gets one probe per site, told apart by address.
    let mut per_name: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for s in &sites {
        *per_name.entry((&s.provider, &s.name)).or_default() += 1;
    }
    // A spec matching several sites skips those that cannot be probed, with a warning, as a
    // function glob does; one that matches a single site is refused with the reason.
    let many = sites.len() > 1;
    let total = sites.len();
    let mut skipped: Vec<String> = Vec::new();
    let mut last_refusal = None;
    for site in sites {
        let display = if per_name[&(site.provider.as_str(), site.name.as_str())] > 1 {
            format!("usdt:{}:{}@{:#x}", site.provider, site.name, site.pc)
        } else {
            format!("usdt:{}:{}", site.provider, site.name)
        };
        let checked = check_site(bin, site, kernel).map_err(|why| format!("{display}: {why}"));
        let (offset, handling, ref_ctr_offset) = match checked {
            Ok(c) => c,
            Err(why) if many => {
                skipped.push(display);
                last_refusal = Some(why);
                continue;
            }
            Err(why) => return Err(not_probeable(why)),
        };
        let (args, fetches) = site_args(spec, site)?;
        let predicate = site_predicate(spec, site)?;
        let key = (bin.id, offset);
        if let Some(&i) = index.get(&key) {
            let existing = &mut probes[i];
            if existing.predicate != predicate {
                return Err(not_probeable(format!(
                    "{display} is also probed by {:?} with {}: specs probing the same site \
                     must have the same predicate (or none)",
                    existing.probe.specs.join(" "),
                    match &existing.predicate {
                        Some(p) => format!("the predicate `if {}`", p.text),
                        None => "no predicate".into(),
                    }
                )));
            }
            if !existing.probe.specs.contains(&spec.text) {
                existing.probe.specs.push(spec.text.clone());
            }
            existing.probe.kind = merge_kind(existing.probe.kind, ProbeKind::Entry);
            existing.ref_ctr_offset = existing.ref_ctr_offset.or(ref_ctr_offset);
            for (a, f) in args.into_iter().zip(fetches) {
                if !existing.probe.args.contains(&a) {
                    existing.probe.args.push(a);
                    existing.fetches.push(f);
                }
            }
            continue;
        }
        let func = bin.function_at(site.pc);
        index.insert(key, probes.len());
        probes.push(ResolvedProbe {
            probe: Probe {
                id: probes.len() as u32,
                name: display,
                specs: vec![spec.text.clone()],
                binary: bin.display.to_string_lossy().into_owned(),
                build_id: bin.build_id.clone(),
                symbol: func.map(|s| s.display().to_string()).unwrap_or_default(),
                vaddr: site.pc,
                offset,
                kind: ProbeKind::Entry,
                stack_mode: StackMode::FramePointer,
                args,
                site: None,
            },
            fetches,
            size: func.map(|s| s.size).unwrap_or(0),
            first_insn: handling,
            at_function_start: false,
            site: crate::site::EntrySite::at_start(site.pc, handling, None),
            site_offset: offset,
            starts_with_push_rbp: false,
            binary_keeps_frame_pointers: bin.fp_fraction >= FRAME_POINTER_THRESHOLD,
            ref_ctr_offset,
            open_path: bin.path.clone(),
            predicate,
            go: None,
            binary_is_go: bin.go.is_some(),
        });
    }
    if skipped.len() == total {
        return Err(not_probeable(match (total, last_refusal) {
            (1, Some(why)) => why,
            (_, Some(why)) => format!(
                "none of the {total} sites it matches can be probed ({}); the last: {why}",
                urec_format::name_list(&skipped, 8)
            ),
            _ => "no site can be probed".into(),
        }));
    }
    if !skipped.is_empty() {
        warnings.push(format!(
            "{}: skipped {} that cannot be probed: {} (the last: {})",
            spec.text,
            urec_format::plural(skipped.len() as u64, "USDT site", "USDT sites"),
            urec_format::name_list(&skipped, 8),
            last_refusal.unwrap_or_default(),
        ));
    }
    Ok(())
}

/// Checks that a probe can go at `site`: its pc starts an instruction of its function on
/// every path through it ([`crate::resolve::boundary`]: the note is data anyone can write,
/// and a pc inside an instruction corrupts it), the kernel can probe that instruction, and
/// its semaphore is data the kernel may count ([`Binary::semaphore_problem`]). Gives the
/// site's file offset, how the kernel handles its instruction, and the semaphore's offset.
fn check_site(
    bin: &Binary,
    site: &UsdtProbe,
    kernel: &KernelUprobes,
) -> Result<(FileOffset, InsnHandling, Option<u64>), String> {
    let offset = bin.vaddr_to_offset(site.pc).ok_or_else(|| {
        format!(
            "its site {:#x} is not in an executable segment of {}",
            site.pc,
            bin.path.display()
        )
    })?;
    // The function around the site, to decode from its start: its symbol, else its unwind
    // entry. A site in no known function is taken at its word, as before.
    let func = bin
        .function_at(site.pc)
        .map(|s| (s.display().to_string(), s.vaddr, s.size))
        .or_else(|| {
            let (start, len) = bin.unwind_range(site.pc)?;
            Some((format!("{start:#x}"), start, len))
        });
    if let Some((name, start, size)) = func {
        crate::resolve::boundary(bin, &name, start, size, site.pc)
            .map_err(|why| format!("its site {:#x} cannot be probed: {why}", site.pc))?;
    }
    let bytes = bin.bytes_at(site.pc, 16);
    let handling = insn::classify(bytes, kernel);
    if let InsnHandling::Refused(why) = handling {
        return Err(format!(
            "the instruction at its site {:#x} cannot be probed: {why}",
            site.pc
        ));
    }
    let ref_ctr_offset = match site.semaphore {
        None => None,
        Some(sema) => {
            if let Some(why) = bin.semaphore_problem(sema) {
                return Err(format!(
                    "its semaphore {sema:#x} cannot be counted: {why} (sys/sdt.h puts semaphores \
                     in .probes, writable data)"
                ));
            }
            Some(
                bin.mapped_vaddr_to_offset(sema)
                    .ok_or_else(|| {
                        format!(
                    "its semaphore {sema:#x} is not in the file-backed part of a segment of {}, \
                     so the kernel cannot count it",
                    bin.path.display()
                )
                    })?
                    .0,
            )
        }
    };
    Ok((offset, handling, ref_ctr_offset))
}

/// The spec's ARGs at one site: `argN` replaced by the site's N-th operand, and a bare `argN`
/// without a TYPE typed by the operand's size and sign.
fn site_args(spec: &ProbeSpec, site: &UsdtProbe) -> Result<(Vec<ArgSpec>, Vec<Fetch>), SpecError> {
    let mut args = Vec::with_capacity(spec.args.len());
    let mut fetches = Vec::with_capacity(spec.args.len());
    for arg in &spec.args {
        let bad = |why: String| SpecError::BadArg {
            spec: spec.text.clone(),
            arg: arg.fetch_text.clone(),
            why,
        };
        let fetch = substitute(&arg.fetch, &site.args).map_err(|why| {
            bad(format!(
                "{why} (usdt:{}:{} has {}: {:?})",
                site.provider,
                site.name,
                urec_format::plural(site.args.len() as u64, "argument", "arguments"),
                site.args_text
            ))
        })?;
        let ty = match arg.fetch {
            Fetch::Arg(n) if !arg.typed => {
                operand(&site.args, n).map_or(arg.ty, UsdtArg::default_type)
            }
            _ => arg.ty,
        };
        let mut format = arg.to_format(false);
        format.ty = ty;
        args.push(format);
        fetches.push(fetch);
    }
    Ok((args, fetches))
}

/// The spec's predicate at one site: parsed again with `argN` typed by the site's operands
/// (a constant is checked against the operand's size and sign, and compared in them), and its
/// operands' `argN` replaced by where the operands are, as [`site_args`] does for the ARGs.
fn site_predicate(spec: &ProbeSpec, site: &UsdtProbe) -> Result<Option<Predicate>, SpecError> {
    let Some(pred) = &spec.predicate else {
        return Ok(None);
    };
    let bad = |why: String| SpecError::BadPredicate {
        spec: spec.text.clone(),
        why: format!(
            "at usdt:{}:{} (operands {:?}): {why}",
            site.provider, site.name, site.args_text
        ),
    };
    let site_type = |n: u32| operand(&site.args, n).map(UsdtArg::default_type);
    let mut pred = predicate::parse_typed(&pred.text, &spec.args, Typing::UsdtSite(&site_type))
        .map_err(bad)?;
    for op in &mut pred.operands {
        op.fetch = substitute(&op.fetch, &site.args)
            .map_err(|why| bad(format!("{}: {why}", op.fetch_text)))?;
    }
    Ok(Some(pred))
}

/// `fetch` with every `argN` replaced by where the N-th operand is at the site.
fn substitute(fetch: &Fetch, operands: &[UsdtArg]) -> Result<Fetch, String> {
    Ok(match fetch {
        Fetch::Arg(n) => {
            let operand = operand(operands, *n).ok_or_else(|| {
                format!("arg{n} does not exist: USDT arguments count from 1 to the probe's count")
            })?;
            operand.fetch().map_err(|why| format!("arg{n}: {why}"))?
        }
        Fetch::Retval => {
            return Err("$retval: a USDT probe is a point in the code, it has no return".into())
        }
        Fetch::Deref { offset, inner } => Fetch::Deref {
            offset: *offset,
            inner: Box::new(substitute(inner, operands)?),
        },
        other => other.clone(),
    })
}

/// The operand `argN` names (1-based).
fn operand(operands: &[UsdtArg], n: u32) -> Option<&UsdtArg> {
    (n as usize).checked_sub(1).and_then(|i| operands.get(i))
}

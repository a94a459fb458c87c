//! Predicates: the trailing `if EXPR` of a spec (`libc:malloc size=arg1:u64 if size >= 4096`).
//!
//! EXPR is built from operands (a fetched ARG by its NAME, or a FETCH the spec does not store:
//! `argN`, `$retval`, `$comm`), constants, `== != < <= > >=`, `&&`, `||`, `!` and parentheses.
//! An integer comparison happens in the operand's TYPE (width and sign: `r=$retval:s32 if r ==
//! -1`), and a constant that does not fit that type is refused here, so the BPF program never
//! compares values the user could not have meant. String operands (`:string` ARGs, `$comm`)
//! compare with `==` / `!=` against a quoted string.
//!
//! Everything is checked here, before anything is attached: what the BPF program evaluates is
//! a bounded list of comparisons and `&&`/`||` steps ([`MAX_COMPARISONS`], [`MAX_OPERANDS`],
//! [`MAX_STRING`]), compiled by the recorder.

use std::fmt;

use urec_format::ArgType;

use crate::spec::{parse_fetch, Arg, Fetch};

/// Comparisons per predicate (the BPF program evaluates them in a bounded loop).
pub const MAX_COMPARISONS: usize = 8;
/// Distinct operands per predicate (each has its own fetch program).
pub const MAX_OPERANDS: usize = 4;
/// Bytes of a string constant (without its NUL).
pub const MAX_STRING: usize = 63;
/// String comparisons per predicate.
pub const MAX_STRING_COMPARISONS: usize = 4;

/// A parsed `if EXPR`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Predicate {
    /// EXPR as written.
    pub text: String,
    /// The expression; [`Expr::Cmp`] operands index [`Predicate::operands`].
    pub expr: Expr,
    /// What the comparisons read: the spec's ARGs they name, or the FETCHes they name
    /// directly (typed x64, `$comm` a string). Each is fetched for the predicate alone.
    pub operands: Vec<Arg>,
}

/// A boolean expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expr {
    /// `OPERAND OP CONSTANT`.
    Cmp {
        /// Index in [`Predicate::operands`].
        operand: usize,
        /// The comparison.
        op: CmpOp,
        /// The constant, in the operand's type.
        value: Value,
    },
    /// `A && B`.
    And(Box<Expr>, Box<Expr>),
    /// `A || B`.
    Or(Box<Expr>, Box<Expr>),
    /// `!A`.
    Not(Box<Expr>),
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    /// The operator that is true exactly when this one is false.
    pub fn negated(self) -> CmpOp {
        match self {
            CmpOp::Eq => CmpOp::Ne,
            CmpOp::Ne => CmpOp::Eq,
            CmpOp::Lt => CmpOp::Ge,
            CmpOp::Le => CmpOp::Gt,
            CmpOp::Gt => CmpOp::Le,
            CmpOp::Ge => CmpOp::Lt,
        }
    }

    /// `a OP b` is `b MIRROR a`.
    fn mirrored(self) -> CmpOp {
        match self {
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::Le => CmpOp::Ge,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::Ge => CmpOp::Le,
            other => other,
        }
    }
}

impl fmt::Display for CmpOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        })
    }
}

/// A constant of a comparison.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// An integer: for signed types the value sign-extended to 64 bits, else zero-extended.
    Int(u64),
    /// A string's bytes (no NUL, at most [`MAX_STRING`]).
    Str(Vec<u8>),
}

impl Predicate {
    /// Number of comparisons.
    pub fn comparisons(&self) -> usize {
        fn count(e: &Expr) -> usize {
            match e {
                Expr::Cmp { .. } => 1,
                Expr::And(a, b) | Expr::Or(a, b) => count(a) + count(b),
                Expr::Not(a) => count(a),
            }
        }
        count(&self.expr)
    }

    /// True when an operand uses `$retval`.
    pub fn uses_retval(&self) -> bool {
        self.operands.iter().any(Arg::uses_retval)
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Int(i128),
    Str(Vec<u8>),
    Op(&'static str),
}

fn tokenize(text: &str) -> Result<Vec<Tok>, String> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if let Some(op) = ["==", "!=", "<=", ">=", "&&", "||"]
            .into_iter()
            .find(|op| b[i..].starts_with(op.as_bytes()))
        {
            out.push(Tok::Op(op));
            i += 2;
            continue;
        }
        if let Some(op) = ["<", ">", "!", "(", ")"]
            .into_iter()
            .find(|op| op.as_bytes()[0] == c)
        {
            out.push(Tok::Op(op));
            i += 1;
            continue;
        }
        if c == b'=' {
            return Err("'=' is not a comparison: use '=='".into());
        }
        if c == b'"' || c == b'\'' {
            let (s, next) = string_literal(b, i)?;
            out.push(Tok::Str(s));
            i = next;
            continue;
        }
        if c.is_ascii_digit() || (c == b'-' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            let start = i;
            i += 1;
            while i < b.len() && b[i].is_ascii_alphanumeric() {
                i += 1;
            }
            let word = &text[start..i];
            out.push(Tok::Int(parse_int(word)?));
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' || c == b'$' {
            let start = i;
            i += 1;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push(Tok::Ident(text[start..i].to_string()));
            continue;
        }
        return Err(format!(
            "unexpected {:?} in the predicate",
            text[i..].chars().next().unwrap_or('?')
        ));
    }
    Ok(out)
}

/// A quoted string starting at `b[start]` (its quote): its bytes and the index after it.
fn string_literal(b: &[u8], start: usize) -> Result<(Vec<u8>, usize), String> {
    let quote = b[start];
    let mut out = Vec::new();
    let mut i = start + 1;
    while i < b.len() {
        let c = b[i];
        if c == quote {
            return Ok((out, i + 1));
        }
        if c == b'\\' {
            let e = *b.get(i + 1).ok_or("unterminated string in the predicate")?;
            i += 2;
            out.push(match e {
                b'n' => b'\n',
                b't' => b'\t',
                b'\\' => b'\\',
                b'"' => b'"',
                b'\'' => b'\'',
                b'x' => {
                    let hex = b
                        .get(i..i + 2)
                        .and_then(|h| std::str::from_utf8(h).ok())
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                        .ok_or("bad \\x escape in a string: expected two hex digits")?;
                    i += 2;
                    hex
                }
                _ => return Err(format!("unknown escape \\{} in a string", e as char)),
            });
            continue;
        }
        out.push(c);
        i += 1;
    }
    Err("unterminated string in the predicate".into())
}

fn parse_int(word: &str) -> Result<i128, String> {
    let (neg, digits) = match word.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, word),
    };
    let magnitude = match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => digits.parse::<u64>(),
    }
    .map_err(|_| format!("bad number {word:?}: expected decimal or 0xHEX (64 bits at most)"))?;
    let v = i128::from(magnitude);
    Ok(if neg { -v } else { v })
}

/// How operands that name `argN` without a TYPE are typed.
#[derive(Clone, Copy)]
pub(crate) enum Typing<'a> {
    /// As written (uprobes: a bare `argN` is x64, a named ARG has its TYPE or x64).
    AsWritten,
    /// A USDT spec before its sites are known: an untyped `argN` takes its operand's type at
    /// each site, so its constants are checked only against 64 bits (signed or not) here, and
    /// again, strictly, by [`Typing::UsdtSite`].
    UsdtDeferred,
    /// A USDT site: an untyped `argN` has the type of the site's N-th operand (its size and
    /// sign), `None` when the site has no such operand (substituting it reports that).
    UsdtSite(&'a dyn Fn(u32) -> Option<ArgType>),
}

struct Parser<'a> {
    toks: Vec<Tok>,
    at: usize,
    args: &'a [Arg],
    operands: Vec<Arg>,
    typing: Typing<'a>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at)
    }

    fn eat(&mut self, op: &'static str) -> bool {
        if self.peek() == Some(&Tok::Op(op)) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn or(&mut self, depth: usize) -> Result<Expr, String> {
        let mut e = self.and(depth)?;
        while self.eat("||") {
            e = Expr::Or(Box::new(e), Box::new(self.and(depth)?));
        }
        Ok(e)
    }

    fn and(&mut self, depth: usize) -> Result<Expr, String> {
        let mut e = self.unary(depth)?;
        while self.eat("&&") {
            e = Expr::And(Box::new(e), Box::new(self.unary(depth)?));
        }
        Ok(e)
    }

    fn unary(&mut self, depth: usize) -> Result<Expr, String> {
        if depth > 32 {
            return Err("the predicate nests too deep".into());
        }
        if self.eat("!") {
            return Ok(Expr::Not(Box::new(self.unary(depth + 1)?)));
        }
        if self.eat("(") {
            let e = self.or(depth + 1)?;
            if !self.eat(")") {
                return Err("missing ')' in the predicate".into());
            }
            return Ok(e);
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, String> {
        let first = self.next_operand_or_const()?;
        let op = match self.peek() {
            Some(Tok::Op(s)) => match *s {
                "==" => CmpOp::Eq,
                "!=" => CmpOp::Ne,
                "<" => CmpOp::Lt,
                "<=" => CmpOp::Le,
                ">" => CmpOp::Gt,
                ">=" => CmpOp::Ge,
                other => {
                    return Err(format!(
                        "expected a comparison (== != < <= > >=), found {other:?}"
                    ))
                }
            },
            Some(t) => {
                return Err(format!(
                    "expected a comparison (== != < <= > >=), found {}",
                    describe(t)
                ))
            }
            None => {
                return Err(
                    "expected a comparison (== != < <= > >=) at the end of the predicate".into(),
                )
            }
        };
        self.at += 1;
        let second = self.next_operand_or_const()?;
        let (name, op, constant) = match (first, second) {
            (Tok::Ident(n), c @ (Tok::Int(_) | Tok::Str(_))) => (n, op, c),
            (c @ (Tok::Int(_) | Tok::Str(_)), Tok::Ident(n)) => (n, op.mirrored(), c),
            (Tok::Ident(a), Tok::Ident(b)) => {
                return Err(format!(
                    "{a} {op} {b}: a comparison is between one ARG and a constant"
                ))
            }
            _ => return Err("a comparison needs an ARG on one side".into()),
        };
        let mut arg = self.operand(&name)?;
        let deferred = match (arg.typed, &arg.fetch, self.typing) {
            (false, Fetch::Arg(n), Typing::UsdtSite(site_type)) => {
                if let Some(ty) = site_type(*n) {
                    arg.ty = ty;
                }
                false
            }
            (false, Fetch::Arg(_), Typing::UsdtDeferred) => true,
            _ => false,
        };
        let value = if deferred {
            deferred_value(&arg, constant)?
        } else {
            constant_value(&arg, op, constant)?
        };
        let operand = match self.operands.iter().position(|a| a.name == arg.name) {
            Some(i) => i,
            None => {
                if self.operands.len() == MAX_OPERANDS {
                    return Err(format!(
                        "a predicate may read at most {MAX_OPERANDS} different ARGs"
                    ));
                }
                self.operands.push(arg);
                self.operands.len() - 1
            }
        };
        Ok(Expr::Cmp { operand, op, value })
    }

    fn next_operand_or_const(&mut self) -> Result<Tok, String> {
        match self.toks.get(self.at) {
            Some(t @ (Tok::Ident(_) | Tok::Int(_) | Tok::Str(_))) => {
                self.at += 1;
                Ok(t.clone())
            }
            Some(t) => Err(format!(
                "expected an ARG name or a constant, found {}",
                describe(t)
            )),
            None => Err("the predicate ends too early".into()),
        }
    }

    /// The ARG `name` names: one of the spec's (by NAME, or by its FETCH when unnamed), else
    /// a FETCH of its own (`argN`, `$retval`, `$comm`), typed x64 (`$comm`: string).
    fn operand(&self, name: &str) -> Result<Arg, String> {
        if let Some(a) = self.args.iter().find(|a| a.name == name) {
            return Ok(a.clone());
        }
        let fetch = parse_fetch(name, 0).map_err(|_| {
            let names: Vec<&str> = self.args.iter().map(|a| a.name.as_str()).collect();
            if names.is_empty() {
                format!("{name:?} is neither an ARG of this spec nor argN, $retval or $comm")
            } else {
                format!(
                    "{name:?} is neither an ARG of this spec ({}) nor argN, $retval or $comm",
                    names.join(", ")
                )
            }
        })?;
        let ty = if fetch == Fetch::Comm {
            ArgType::String
        } else {
            ArgType::Hex(64)
        };
        Ok(Arg {
            name: name.to_string(),
            fetch_text: name.to_string(),
            fetch,
            ty,
            typed: false,
        })
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Ident(n) => format!("{n:?}"),
        Tok::Int(v) => v.to_string(),
        Tok::Str(_) => "a string".into(),
        Tok::Op(o) => format!("{o:?}"),
    }
}

/// The constant of an untyped USDT `argN` before the site gives its type: anything a 64-bit
/// operand could hold; the value is a placeholder until the site's parse.
fn deferred_value(arg: &Arg, constant: Tok) -> Result<Value, String> {
    match constant {
        Tok::Int(v) if v >= i128::from(i64::MIN) && v <= i128::from(u64::MAX) => {
            Ok(Value::Int(v as u64))
        }
        Tok::Int(v) => Err(format!("{v} does not fit {}'s 64 bits", arg.name)),
        Tok::Str(_) => Err(format!(
            "{} is an integer (a USDT operand): compare it with a number, or fetch the \
             string it points to as NAME=+0({}):string",
            arg.name, arg.name
        )),
        t => Err(format!("expected a constant, found {}", describe(&t))),
    }
}

/// The constant of `arg OP constant`, checked against the ARG's type.
fn constant_value(arg: &Arg, op: CmpOp, constant: Tok) -> Result<Value, String> {
    match (arg.ty, constant) {
        (ArgType::String, Tok::Str(s)) => {
            if !matches!(op, CmpOp::Eq | CmpOp::Ne) {
                return Err(format!(
                    "{} is a string: it compares with == or != only",
                    arg.name
                ));
            }
            if s.len() > MAX_STRING {
                return Err(format!(
                    "string constants are at most {MAX_STRING} bytes, got {}",
                    s.len()
                ));
            }
            if s.contains(&0) {
                return Err("a string constant cannot contain a NUL byte".into());
            }
            Ok(Value::Str(s))
        }
        (ArgType::String, Tok::Int(_)) => Err(format!(
            "{} is a string: compare it with a quoted string",
            arg.name
        )),
        (ty, Tok::Str(_)) => Err(format!(
            "{} is an integer ({}): compare it with a number, or fetch it as :string",
            arg.name,
            type_name(ty)
        )),
        (ty, Tok::Int(v)) => {
            let (lo, hi, signed): (i128, i128, bool) = match ty {
                ArgType::Unsigned(w) | ArgType::Hex(w) => (0, 1i128 << w, false),
                ArgType::Signed(w) => (-(1i128 << (w - 1)), 1i128 << (w - 1), true),
                ArgType::Bitfield { width, .. } => (0, 1i128 << width, false),
                ArgType::String => unreachable!("handled above"),
            };
            if v < lo || v >= hi {
                return Err(format!(
                    "{v} does not fit {}'s type {} ({lo}..={})",
                    arg.name,
                    type_name(ty),
                    hi - 1
                ));
            }
            Ok(Value::Int(if signed { v as i64 as u64 } else { v as u64 }))
        }
        (_, t) => Err(format!("expected a constant, found {}", describe(&t))),
    }
}

fn type_name(ty: ArgType) -> String {
    match ty {
        ArgType::Unsigned(w) => format!("u{w}"),
        ArgType::Signed(w) => format!("s{w}"),
        ArgType::Hex(w) => format!("x{w}"),
        ArgType::String => "string".into(),
        ArgType::Bitfield {
            width,
            offset,
            container,
        } => format!("b{width}@{offset}/{container}"),
    }
}

/// Parses EXPR against the spec's ARGs, untyped `argN` operands typed as `typing` says.
pub(crate) fn parse_typed(text: &str, args: &[Arg], typing: Typing) -> Result<Predicate, String> {
    let toks = tokenize(text)?;
    if toks.is_empty() {
        return Err("empty predicate after 'if'".into());
    }
    let mut p = Parser {
        toks,
        at: 0,
        args,
        operands: Vec::new(),
        typing,
    };
    let expr = p.or(0)?;
    if let Some(t) = p.peek() {
        return Err(format!(
            "unexpected {} in the predicate (combine comparisons with && or ||)",
            describe(t)
        ));
    }
    let pred = Predicate {
        text: text.trim().to_string(),
        expr,
        operands: p.operands,
    };
    if pred.comparisons() > MAX_COMPARISONS {
        return Err(format!(
            "a predicate may have at most {MAX_COMPARISONS} comparisons, got {}",
            pred.comparisons()
        ));
    }
    fn strings(e: &Expr) -> usize {
        match e {
            Expr::Cmp {
                value: Value::Str(_),
                ..
            } => 1,
            Expr::Cmp { .. } => 0,
            Expr::And(a, b) | Expr::Or(a, b) => strings(a) + strings(b),
            Expr::Not(a) => strings(a),
        }
    }
    if strings(&pred.expr) > MAX_STRING_COMPARISONS {
        return Err(format!(
            "a predicate may have at most {MAX_STRING_COMPARISONS} string comparisons"
        ));
    }
    Ok(pred)
}

/// Splits `ARGS if EXPR` at the first word `if`.
pub(crate) fn split_if(args_text: &str) -> (&str, Option<&str>) {
    let b = args_text.as_bytes();
    let mut i = 0;
    while i + 2 <= b.len() {
        let before_ok = i == 0 || b[i - 1].is_ascii_whitespace();
        let after_ok = b.get(i + 2).is_none_or(u8::is_ascii_whitespace);
        if before_ok && after_ok && &b[i..i + 2] == b"if" {
            return (&args_text[..i], Some(&args_text[i + 2..]));
        }
        i += 1;
    }
    (args_text, None)
}

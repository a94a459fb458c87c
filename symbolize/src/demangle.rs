//! Demangling, done here rather than by blazesym because blazesym hands plain C names to the
//! C++ demangler, which reads `a` as `signed char` and `b` as `bool`.

/// Demangles C++ (`_Z…`) and Rust (legacy `_ZN…h<hash>E` and v0 `_R…`) names, Rust without
/// its hash suffix; leaves every other name alone.
pub fn demangle(name: &str) -> String {
    if !(name.starts_with("_Z") || name.starts_with("_R") || name.starts_with("__Z")) {
        return name.to_string();
    }
    if let Ok(rust) = rustc_demangle::try_demangle(name) {
        return format!("{rust:#}");
    }
    cpp_demangle::Symbol::new(name)
        .ok()
        .and_then(|sym| sym.demangle().ok())
        .unwrap_or_else(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::demangle;

    #[test]
    fn c_names_are_left_alone() {
        assert_eq!(demangle("a"), "a");
        assert_eq!(demangle("main"), "main");
        assert_eq!(demangle("_ZN2ns5Klass6methodEi"), "ns::Klass::method(int)");
    }
}

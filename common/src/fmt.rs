//! Small formatting helpers shared by the plan, the report and the binaries.

/// `1234567.8` → `"1,234,568"` (the document's `Math.round(x).toLocaleString()`).
pub fn group(v: f64) -> String {
    let n = v.round() as i64;
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// A fraction as a percentage with two decimals: `0.95` → `"95.00%"`.
pub fn pct(v: f64) -> String {
    format!("{:.2}%", v * 100.0)
}

/// `redis://user:secret@host` → `redis://user:***@host`.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) if u.password().is_none() && !u.query_pairs().any(|(k, _)| SECRET_PARAMS.contains(&k.as_ref())) => {
            // Nothing secret: shown exactly as written.
            url.to_owned()
        }
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            if u.query_pairs().any(|(k, _)| SECRET_PARAMS.contains(&k.as_ref())) {
                let pairs: Vec<(String, String)> = u
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if SECRET_PARAMS.contains(&k.as_ref()) {
                            "***".into()
                        } else {
                            v.into_owned()
                        };
                        (k.into_owned(), v)
                    })
                    .collect();
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
            u.to_string()
        }
        // Not a URL: redact by shape, so a typo never prints a secret.
        Err(_) => redact_unparsed(url),
    }
}

/// Query parameters that carry a password (`redis+unix:///s.sock?pass=…`).
const SECRET_PARAMS: [&str; 3] = ["pass", "password", "passwd"];

/// `scheme://user:SECRET@rest` and `…pass=SECRET&…` with the secrets replaced by `***`.
fn redact_unparsed(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(start) = out.find("://").map(|i| i + 3)
        && let Some(at) = out[start..].rfind('@').map(|i| start + i)
        && let Some(colon) = out[start..at].find(':').map(|i| start + i)
    {
        out.replace_range(colon + 1..at, "***");
    }
    for key in SECRET_PARAMS {
        let needle = format!("{key}=");
        let mut from = 0;
        while let Some(i) = out[from..].find(&needle).map(|i| from + i + needle.len()) {
            let end = out[i..].find('&').map_or(out.len(), |e| i + e);
            out.replace_range(i..end, "***");
            from = i + 3;
        }
    }
    out
}

/// `num / den`, 0 when `den` is 0.
pub fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 { 0.0 } else { num as f64 / den as f64 }
}

/// `s` safe to print on a terminal: control characters (escape sequences, newlines) replaced
/// by `?`, at most `n` characters.
pub fn printable(s: &str, n: usize) -> String {
    let clean: String = s
        .chars()
        .take(n + 1)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    truncate(&clean, n)
}

/// At most `n` characters, the last one `…` when cut.
pub fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        s.chars().take(n - 1).chain(['…']).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_strips_escapes_and_bounds() {
        assert_eq!(printable("a\u{1b}[2Jb\nc", 64), "a?[2Jb?c");
        assert_eq!(printable(&"x".repeat(1_000_000), 5), "xxxx…");
    }

    #[test]
    fn every_shape_of_secret_is_redacted() {
        assert_eq!(redact_url("redis://:secret@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(redact_url("redis://u:secret@h:6379"), "redis://u:***@h:6379");
        assert_eq!(
            redact_url("redis+unix:///run/r.sock?db=1&pass=secret"),
            "redis+unix:///run/r.sock?db=1&pass=***"
        );
        // Not parseable (bad port): redacted by shape.
        assert_eq!(redact_url("redis://:secret@h:99999"), "redis://:***@h:99999");
        assert_eq!(redact_url("unix:/x?password=secret&db=2"), "unix:/x?password=***&db=2");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
    }

    #[test]
    fn numbers_group_like_to_locale_string() {
        assert_eq!(group(0.4), "0");
        assert_eq!(group(999.0), "999");
        assert_eq!(group(1000.0), "1,000");
        assert_eq!(group(1234567.6), "1,234,568");
        assert_eq!(group(-12345.0), "-12,345");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact_url("redis://:hunter2@db:6379/0"), "redis://:***@db:6379/0");
        assert_eq!(redact_url("redis://db:6379"), "redis://db:6379");
    }

    #[test]
    fn long_names_are_cut_with_an_ellipsis() {
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
    }
}

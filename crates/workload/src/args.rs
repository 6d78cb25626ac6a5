//! Hand-written command-line parsing: `--flag value` or `--flag=value` options, positional
//! arguments, and durations such as `50ms`, `2s`, `1.5s`, `1m`.

use std::collections::BTreeMap;
use std::time::Duration;

/// The arguments after the subcommand, split into options and positionals.
#[derive(Debug, Default)]
pub(crate) struct Args {
    pub(crate) positional: Vec<String>,
    options: BTreeMap<String, String>,
}

impl Args {
    /// Splits `args`; every `--name` takes a value and must be one of `allowed`.
    pub(crate) fn parse(args: &[String], allowed: &[&str]) -> Result<Self, String> {
        let mut out = Args::default();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let Some(flag) = arg.strip_prefix("--") else {
                out.positional.push(arg.clone());
                continue;
            };
            let (name, value) = match flag.split_once('=') {
                Some((n, v)) => (n.to_string(), v.to_string()),
                None => {
                    let v = it.next().ok_or_else(|| format!("--{flag} needs a value"))?;
                    (flag.to_string(), v.clone())
                }
            };
            if !allowed.contains(&name.as_str()) {
                return Err(format!("unknown option --{name}"));
            }
            if out.options.insert(name.clone(), value).is_some() {
                return Err(format!("--{name} given twice"));
            }
        }
        Ok(out)
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.options.get(name).map(String::as_str)
    }

    pub(crate) fn port(&self, default: Option<u16>) -> Result<u16, String> {
        match (self.get("port"), default) {
            (Some(p), _) => p.parse().map_err(|_| format!("bad --port {p:?}")),
            (None, Some(d)) => Ok(d),
            (None, None) => Err("--port is required".into()),
        }
    }

    pub(crate) fn duration(&self, name: &str, default: Duration) -> Result<Duration, String> {
        self.get(name).map_or(Ok(default), |v| {
            parse_duration(v).ok_or_else(|| format!("bad --{name} {v:?} (e.g. 50ms, 2s, 1m)"))
        })
    }
}

/// Parses `250ms`, `2s`, `1.5s`, `3m`, `1h`; a bare number means seconds.
pub(crate) fn parse_duration(s: &str) -> Option<Duration> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("50ms"), Some(Duration::from_millis(50)));
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0ms"), Some(Duration::ZERO));
        for bad in ["", "ms", "5x", "-1s", "1.2.3s", "s5"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn options_and_positionals() {
        let a = Args::parse(
            &strings(&["web", "--type", "A", "--port=8080"]),
            &["type", "port"],
        )
        .unwrap();
        assert_eq!(a.positional, vec!["web"]);
        assert_eq!(a.get("type"), Some("A"));
        assert_eq!(a.port(None), Ok(8080));
        assert_eq!(a.get("name"), None);
    }

    #[test]
    fn rejects_unknown_missing_and_repeated() {
        let allowed = &["port"];
        assert!(Args::parse(&strings(&["--nope", "1"]), allowed).is_err());
        assert!(Args::parse(&strings(&["--port"]), allowed).is_err());
        assert!(Args::parse(&strings(&["--port", "1", "--port", "2"]), allowed).is_err());
        let a = Args::parse(&strings(&["--port", "x"]), allowed).unwrap();
        assert!(a.port(Some(80)).is_err());
        let a = Args::parse(&[], allowed).unwrap();
        assert_eq!(a.port(Some(80)), Ok(80));
        assert!(a.port(None).is_err());
    }
}

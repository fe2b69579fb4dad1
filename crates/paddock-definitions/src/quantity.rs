//! Kubernetes-style quantities (`512Mi`, `4Gi`, `1.5`, `500m`) and the
//! `16GB` spellings environment files use. Hand-written: the crates that
//! parse quantities come with the whole Kubernetes API (`k8s-openapi`
//! keeps them as strings), and the grammar is one line of the spec.

/// A quantity's value in base units (bytes, or cores for CPU).
pub fn parse_quantity(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    // An exponent (`1e3`) is part of the number; `1E` alone is exa.
    let (number, suffix) = if suffix.is_empty() && number.ends_with(['e', 'E']) {
        (&number[..number.len() - 1], &number[number.len() - 1..])
    } else {
        (number, suffix)
    };
    if number.is_empty() || number.starts_with(['+', '-']) && number.len() == 1 {
        return Err(format!("{s:?} has no number"));
    }
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a quantity (e.g. 512Mi, 4Gi, 1.5)"))?;
    let multiplier = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" | "K" | "KB" => 1e3,
        "M" | "MB" => 1e6,
        "G" | "GB" => 1e9,
        "T" | "TB" => 1e12,
        "P" | "PB" => 1e15,
        "E" | "EB" => 1e18,
        "Ki" | "KiB" => 1024.0,
        "Mi" | "MiB" => 1024.0 * 1024.0,
        "Gi" | "GiB" => 1024.0 * 1024.0 * 1024.0,
        "Ti" | "TiB" => 1024f64.powi(4),
        "Pi" | "PiB" => 1024f64.powi(5),
        "Ei" | "EiB" => 1024f64.powi(6),
        other => return Err(format!("{s:?} has an unknown unit {other:?}")),
    };
    let v = value * multiplier;
    if !v.is_finite() {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(v)
}

/// `resources.cpu`: a JSON number of cores or a quantity string.
pub fn parse_cpu(v: &serde_json::Value) -> Result<f64, String> {
    match v {
        serde_json::Value::Number(n) => n.as_f64().ok_or_else(|| "must be a number".into()),
        serde_json::Value::String(s) => parse_quantity(s),
        _ => Err("must be a number of cores or a quantity string".into()),
    }
}

/// A byte quantity, which must be a positive whole number of bytes.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let v = parse_quantity(s)?;
    if v < 1.0 || v > u64::MAX as f64 {
        return Err(format!("{s:?} must be at least one byte"));
    }
    Ok(v.round() as u64)
}

/// A duration such as `30m`, `1h30m` or `45s`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration (e.g. 30m, 1h30m): {e}"))?;
    if d.is_zero() {
        return Err(format!("{s:?} must be longer than zero"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_decimal_and_milli_units() {
        assert_eq!(parse_quantity("512Mi"), Ok(512.0 * 1024.0 * 1024.0));
        assert_eq!(parse_quantity("4Gi"), Ok(4.0 * 1024f64.powi(3)));
        assert_eq!(parse_quantity("16GB"), Ok(16e9));
        assert_eq!(parse_quantity("1.5"), Ok(1.5));
        assert_eq!(parse_quantity("500m"), Ok(0.5));
        assert_eq!(parse_quantity("1e3"), Ok(1000.0));
        assert_eq!(parse_quantity("2E"), Ok(2e18));
        assert_eq!(parse_bytes("1Ki"), Ok(1024));
    }

    #[test]
    fn bad_quantities_say_why() {
        for bad in ["", "Gi", "12Q", "1.2.3Gi", "-", "abc"] {
            assert!(parse_quantity(bad).is_err(), "{bad:?}");
        }
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("-1Gi").is_err());
        assert!(parse_bytes("100m").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30m").map(|d| d.as_secs()), Ok(1800));
        assert_eq!(parse_duration("1h30m").map(|d| d.as_secs()), Ok(5400));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
    }
}

//! Sizes as the user writes them (`--sizes 120M,30M`) and as the demo prints them.

use super::MIB;

/// `125829120` -> `125,829,120`.
pub(super) fn group_digits(n: u64) -> String {
    let digits: Vec<u8> = n.to_string().into_bytes();
    let head = match digits.len() % 3 {
        0 => 3,
        r => r,
    };
    let (first, rest) = digits.split_at(head.min(digits.len()));
    let mut groups = vec![String::from_utf8_lossy(first).into_owned()];
    groups.extend(
        rest.chunks(3)
            .map(|g| String::from_utf8_lossy(g).into_owned()),
    );
    groups.join(",")
}

/// `125829120` -> `120 MiB`, `1536` -> `1.5 KiB`, `17` -> `17 B`.
pub fn human_size(bytes: u64) -> String {
    for (unit, scale) in [("GiB", MIB * 1024), ("MiB", MIB), ("KiB", 1024)] {
        if bytes >= scale {
            let v = bytes as f64 / scale as f64;
            return if v.fract() == 0.0 {
                format!("{v:.0} {unit}")
            } else {
                format!("{v:.1} {unit}")
            };
        }
    }
    format!("{bytes} B")
}

/// Parses `120M,30M,5M` (suffixes `K`, `M`, `G` in binary units, optional `iB`/`B`).
pub fn parse_sizes(text: &str) -> Result<Vec<u64>, String> {
    text.split(',')
        .map(|item| {
            let item = item.trim();
            let upper = item.to_ascii_uppercase();
            let digits = upper.trim_end_matches('B').trim_end_matches('I');
            let (number, scale) = match digits.chars().last() {
                Some('K') => (&digits[..digits.len() - 1], 1024),
                Some('M') => (&digits[..digits.len() - 1], MIB),
                Some('G') => (&digits[..digits.len() - 1], MIB * 1024),
                _ => (digits, 1),
            };
            number
                .trim()
                .parse::<u64>()
                .ok()
                .and_then(|n| n.checked_mul(scale))
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("`{item}` is not a size like 120M, 512K or 4096"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes_and_print_back() {
        assert_eq!(
            parse_sizes("120M, 512K,4096,1GiB,2mb").unwrap(),
            vec![120 * MIB, 512 * 1024, 4096, 1024 * MIB, 2 * MIB]
        );
        for bad in ["", "12X", "-1", "0", "M"] {
            assert!(parse_sizes(bad).is_err(), "{bad}");
        }
        assert_eq!(human_size(120 * MIB), "120 MiB");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(17), "17 B");
        assert_eq!(group_digits(125829120), "125,829,120");
        assert_eq!(group_digits(999), "999");
    }
}

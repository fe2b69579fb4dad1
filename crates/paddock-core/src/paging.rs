//! Pages over an append-only log read newest first (the audit log,
//! webhook deliveries): a page holds up to `limit` rows, and its cursor
//! is the position of its last (oldest) row; the next page is what lies
//! before it, so rows added meanwhile never shift a walk.

use crate::error::CoreError;

/// The most rows a page holds.
pub const MAX_LIMIT: u32 = 200;

/// The position a cursor stands for, checking the page size with it.
pub fn before(limit: u32, cursor: Option<&str>) -> Result<Option<i64>, CoreError> {
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(CoreError::invalid(
            "limit",
            format!("must be from 1 to {MAX_LIMIT}"),
        ));
    }
    cursor
        .map(|c| {
            c.parse::<i64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| CoreError::invalid("cursor", "is not a cursor of this list"))
        })
        .transpose()
}

/// The rows of a page without their positions, and the next page's
/// cursor (none when the page was not full).
pub fn split<T>(rows: Vec<(i64, T)>, limit: u32) -> (Vec<T>, Option<String>) {
    let next = (rows.len() == limit as usize)
        .then(|| rows.last().map(|(seq, _)| seq.to_string()))
        .flatten();
    (rows.into_iter().map(|(_, row)| row).collect(), next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_positions_and_limits_are_bounded() {
        assert_eq!(before(10, None).expect("ok"), None);
        assert_eq!(before(10, Some("42")).expect("ok"), Some(42));
        assert!(before(0, None).is_err());
        assert!(before(201, None).is_err());
        assert!(before(10, Some("x")).is_err());
        assert!(before(10, Some("-1")).is_err());
        let (rows, next) = split(vec![(9, 'a'), (7, 'b')], 2);
        assert_eq!((rows, next.as_deref()), (vec!['a', 'b'], Some("7")));
        let (_, next) = split(vec![(9, 'a')], 2);
        assert_eq!(next, None);
    }
}

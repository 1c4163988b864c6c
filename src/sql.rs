//! SQL text building blocks shared by every module that talks to the server.
//!
//! Invariant: every identifier that reaches SQL goes through [`quote_ident`]; values go through
//! placeholders, never through string formatting. The only user text spliced into SQL is the
//! ALTER clause, and only after [`crate::alter::validate`] accepted it.

/// Quotes an identifier with backticks, doubling any backtick inside it.
///
/// This is the one function that turns a name into SQL; callers never format names themselves.
pub fn quote_ident(name: &str) -> String {
    let mut quoted = String::with_capacity(name.len() + 2);
    quoted.push('`');
    for ch in name.chars() {
        if ch == '`' {
            quoted.push('`');
        }
        quoted.push(ch);
    }
    quoted.push('`');
    quoted
}

/// `db`.`table`, each part quoted.
pub fn qualified(database: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(database), quote_ident(table))
}

/// A comma-separated list of quoted column names.
pub fn column_list<S: AsRef<str>>(columns: &[S]) -> String {
    columns
        .iter()
        .map(|c| quote_ident(c.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `(?, ?, ?)` for `n` values.
pub fn placeholders(n: usize) -> String {
    let mut s = String::with_capacity(2 + n * 3);
    s.push('(');
    for i in 0..n {
        if i > 0 {
            s.push_str(", ");
        }
        s.push('?');
    }
    s.push(')');
    s
}

/// A predicate selecting rows whose key tuple is strictly greater (`>`) or greater-or-equal
/// than a bound, expanded into ORs of ANDs because MariaDB's range optimizer does not use an
/// index for row-constructor comparisons. Consumes one placeholder per (column, occurrence), in
/// the order given by [`key_bound_params`].
///
/// For key (a, b) and `>`: `(a > ?) OR (a = ? AND b > ?)`.
pub fn key_after(key: &[String], inclusive: bool, lower: bool) -> String {
    let (strict, last) = match (lower, inclusive) {
        (true, false) => (">", ">"),
        (true, true) => (">", ">="),
        (false, false) => ("<", "<"),
        (false, true) => ("<", "<="),
    };
    let mut ors = Vec::with_capacity(key.len());
    for i in 0..key.len() {
        let mut ands = Vec::with_capacity(i + 1);
        for col in &key[..i] {
            ands.push(format!("{} = ?", quote_ident(col)));
        }
        let op = if i + 1 == key.len() { last } else { strict };
        ands.push(format!("{} {} ?", quote_ident(&key[i]), op));
        ors.push(format!("({})", ands.join(" AND ")));
    }
    format!("({})", ors.join(" OR "))
}

/// The parameters for [`key_after`], repeating the bound's prefix as the predicate needs it.
pub fn key_bound_params<T: Clone>(bound: &[T]) -> Vec<T> {
    let mut params = Vec::with_capacity(bound.len() * (bound.len() + 1) / 2);
    for i in 0..bound.len() {
        params.extend_from_slice(&bound[..=i]);
    }
    params
}

/// `a = ? AND b = ?` for a key.
pub fn key_equals(key: &[String]) -> String {
    key.iter()
        .map(|c| format!("{} = ?", quote_ident(c)))
        .collect::<Vec<_>>()
        .join(" AND ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_backticks_by_doubling() {
        assert_eq!(quote_ident("t"), "`t`");
        assert_eq!(quote_ident("a`b"), "`a``b`");
        assert_eq!(quote_ident("`; DROP TABLE x; --"), "```; DROP TABLE x; --`");
        assert_eq!(qualified("d b", "t"), "`d b`.`t`");
    }

    #[test]
    fn composite_key_predicate_and_params() {
        let key = vec!["a".to_string(), "b".to_string()];
        assert_eq!(
            key_after(&key, false, true),
            "((`a` > ?) OR (`a` = ? AND `b` > ?))"
        );
        assert_eq!(
            key_after(&key, true, false),
            "((`a` < ?) OR (`a` = ? AND `b` <= ?))"
        );
        assert_eq!(key_bound_params(&[1, 2]), vec![1, 1, 2]);
        assert_eq!(key_equals(&key), "`a` = ? AND `b` = ?");
        assert_eq!(placeholders(3), "(?, ?, ?)");
    }
}

//! Validation of the user's ALTER clause, the text that follows `ALTER TABLE <name>`.
//!
//! This clause is the only user-supplied text shadowcut splices into SQL, so this
//! module is a security boundary. Its invariant: nothing passes [`validate`] unless it
//! is a plain comma-separated list of alter specifications for the one table being
//! changed: no second statement, no comment that could hide one, no name reaching
//! another database or table, and nothing the copy-and-swap engine cannot reproduce
//! (foreign keys, partitioning, tablespaces, table renames). On success it also
//! reports the column renames and drops the engine needs to map old rows onto the
//! new shape. Where the server could read the text differently depending on
//! `sql_mode` (backslash escapes, ANSI_QUOTES) the lexer refuses rather than guesses.

use thiserror::Error;

/// What the engine learns from a validated clause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterPlan {
    /// The clause, trimmed, safe to splice after `ALTER TABLE <quoted name> `.
    pub clause: String,
    /// Columns renamed by `CHANGE [COLUMN] old new ...` or `RENAME COLUMN old TO new`,
    /// as (old, new) unquoted names; only when old != new, compared case-insensitively.
    pub renames: Vec<(String, String)>,
    /// Columns named by `DROP [COLUMN] [IF EXISTS] name` (unquoted).
    pub dropped: Vec<String>,
}

/// Why a clause was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AlterError {
    #[error("the ALTER clause is empty: pass the alter specifications to apply, e.g. `ADD COLUMN c INT`")]
    Empty,
    #[error("the ALTER clause contains ';': pass a single list of alter specifications for one table, without ';'")]
    Semicolon,
    #[error("the ALTER clause contains a comment marker (`/*`, `--` or `#`): remove it, since comments (including executable `/*! */` ones) can hide SQL from validation")]
    Comment,
    #[error("the ALTER clause opens a {0}-quoted string or name that is never closed: close it with a matching {0}")]
    Unterminated(char),
    #[error("a string in the ALTER clause escapes its own quote with a backslash, which the server reads differently depending on sql_mode: double the quote instead, as in 'it''s'")]
    BackslashQuote,
    #[error("the ALTER clause starts with `ALTER TABLE`: pass only the clause, e.g. `ADD COLUMN c INT`, not the whole statement")]
    WholeStatement,
    #[error("the ALTER clause renames the table: shadowcut cannot rename the table it is rebuilding; remove the RENAME and rename the table separately")]
    RenameTable,
    #[error("the ALTER clause names `{0}`, which reaches another database or table: use unqualified names of the altered table's own columns and indexes")]
    QualifiedName(String),
    #[error("the ALTER clause uses a foreign key (`FOREIGN KEY` or `REFERENCES`): foreign keys are not supported yet; remove that part")]
    ForeignKey,
    #[error("the ALTER clause changes partitions: partition operations are not supported; remove the partition clause")]
    Partition,
    #[error("the ALTER clause touches a tablespace: tablespace operations are not supported; remove the TABLESPACE clause")]
    Tablespace,
    #[error("the ALTER clause sets `{0}`: shadowcut chooses how the change is applied; remove the {0} specification")]
    ExecutionOption(String),
    #[error("the ALTER clause uses UNION, which names other tables: MERGE table unions are not supported; remove it")]
    Union,
    #[error("`{0}` does not start an alter specification shadowcut accepts: each comma-separated item must start with ADD, ALTER, CHANGE, MODIFY, DROP, RENAME or a table option such as ENGINE")]
    UnknownSpecification(String),
    #[error("the ALTER clause has an empty item between commas: remove the stray comma")]
    EmptySpecification,
    #[error("the ALTER clause has unbalanced parentheses: make every `(` match a `)`")]
    UnbalancedParentheses,
    #[error("could not read the column name after `{0}`: write column names bare or in backticks (not double quotes), as in `CHANGE a b INT` or `RENAME COLUMN a TO b`")]
    ExpectedColumnName(String),
    #[error("table option `{0}` needs exactly one value: write it as `{0} = value` and separate further options with commas")]
    BadTableOption(String),
}

/// Whether a specification's first word introduces a free-form command or a table
/// option, which must then be a flat `NAME [=] value` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Starter {
    Command,
    TableOption,
}
use Starter::{Command, TableOption};

/// Every word allowed to start a specification. Anything else is refused, which is
/// what keeps smuggled statements and unsupported operations out.
#[rustfmt::skip]
const STARTERS: &[(&str, Starter)] = &[
    ("ADD", Command), ("ALTER", Command), ("CHANGE", Command), ("MODIFY", Command),
    ("DROP", Command), ("RENAME", Command), ("ORDER", Command), ("CONVERT", Command),
    ("FORCE", Command), ("ENABLE", Command), ("DISABLE", Command), ("WITH", Command),
    ("WITHOUT", Command),
    ("DEFAULT", TableOption), ("CHARACTER", TableOption), ("CHARSET", TableOption),
    ("COLLATE", TableOption), ("ENGINE", TableOption), ("AUTO_INCREMENT", TableOption),
    ("COMMENT", TableOption), ("ROW_FORMAT", TableOption), ("KEY_BLOCK_SIZE", TableOption),
    ("STATS_PERSISTENT", TableOption), ("STATS_AUTO_RECALC", TableOption),
    ("STATS_SAMPLE_PAGES", TableOption), ("PACK_KEYS", TableOption), ("CHECKSUM", TableOption),
    ("AVG_ROW_LENGTH", TableOption), ("MAX_ROWS", TableOption), ("MIN_ROWS", TableOption),
    ("PAGE_CHECKSUM", TableOption), ("TRANSACTIONAL", TableOption),
    ("DELAY_KEY_WRITE", TableOption), ("INSERT_METHOD", TableOption),
    ("PAGE_COMPRESSED", TableOption), ("PAGE_COMPRESSION_LEVEL", TableOption),
    ("ENCRYPTED", TableOption), ("ENCRYPTION_KEY_ID", TableOption), ("SEQUENCE", TableOption),
];

/// Words after DROP that drop something other than a column (all reserved words).
const NOT_COLUMNS: &[&str] = &["INDEX", "KEY", "PRIMARY", "FOREIGN", "CONSTRAINT", "CHECK"];

fn starter(upper: &str) -> Option<Starter> {
    STARTERS.iter().find(|(w, _)| *w == upper).map(|&(_, s)| s)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Word,
    /// Backtick-quoted identifier.
    Ident,
    /// Single- or double-quoted text; double quotes make a name under ANSI_QUOTES.
    Str,
    Number,
    Punct(char),
}

#[derive(Debug, Clone, Copy)]
struct Token<'a> {
    kind: Kind,
    text: &'a str,
}

impl Token<'_> {
    fn is_word(&self, w: &str) -> bool {
        self.kind == Kind::Word && self.text.eq_ignore_ascii_case(w)
    }

    fn upper(&self) -> String {
        self.text.to_ascii_uppercase()
    }

    /// The column name this token spells. Double-quoted text is not one, because
    /// whether the server reads it as a name depends on its sql_mode.
    fn name(&self) -> Option<String> {
        match self.kind {
            Kind::Word => Some(self.text.to_string()),
            Kind::Ident => {
                let inner = self.text.strip_prefix('`')?.strip_suffix('`')?;
                Some(inner.replace("``", "`"))
            }
            _ => None,
        }
    }
}

/// Only ASCII whitespace separates tokens: the server reads other characters, such
/// as U+00A0, as part of identifiers, and we must split exactly where it does.
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0B | 0x0C)
}

/// Bytes of non-ASCII characters count too, as the server allows them in names.
fn is_ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

/// Lexes byte-wise: every byte that ends a token is ASCII, so slices of `src` at
/// token boundaries always fall on character boundaries.
fn lex(src: &str) -> Result<Vec<Token<'_>>, AlterError> {
    let b = src.as_bytes();
    let at = |i: usize| b.get(i).copied();
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(c) = at(i) {
        let start = i;
        let glued = i.checked_sub(1).and_then(at);
        let glued = glued.is_some_and(|p| is_ident_byte(p) || b"`'\"".contains(&p));
        i += 1;
        let kind = match c {
            c if is_space(c) => continue,
            b';' => return Err(AlterError::Semicolon),
            b'#' => return Err(AlterError::Comment),
            b'/' if at(i) == Some(b'*') => return Err(AlterError::Comment),
            // Any `--` is refused, not only `-- `: servers disagree on what may follow.
            b'-' if at(i) == Some(b'-') => return Err(AlterError::Comment),
            b'`' | b'\'' | b'"' => {
                i = end_of_quoted(b, i, c)?;
                if c == b'`' {
                    Kind::Ident
                } else {
                    Kind::Str
                }
            }
            // `x.5` is a qualified name to the server, but ` .5` is a number.
            b'.' => match fraction_end(b, i) {
                Some((end, true)) if !glued => {
                    i = end;
                    Kind::Number
                }
                _ => Kind::Punct('.'),
            },
            c if is_ident_byte(c) => {
                i += b[i..].iter().take_while(|&&c| is_ident_byte(c)).count();
                if !b[start..i].iter().all(u8::is_ascii_digit) {
                    Kind::Word
                } else {
                    if at(i) == Some(b'.') {
                        i = fraction_end(b, i + 1).map_or(i, |(end, _)| end);
                    }
                    Kind::Number
                }
            }
            c => Kind::Punct(char::from(c)),
        };
        tokens.push(Token {
            kind,
            text: &src[start..i],
        });
    }
    Ok(tokens)
}

/// Returns the index just past a quoted token whose body starts at `i`.
fn end_of_quoted(b: &[u8], mut i: usize, q: u8) -> Result<usize, AlterError> {
    loop {
        match b.get(i) {
            None => return Err(AlterError::Unterminated(char::from(q))),
            // With this escape refused, text ends at the same place whether or not the
            // server honours backslashes (NO_BACKSLASH_ESCAPES, ANSI_QUOTES).
            Some(b'\\') if q != b'`' => {
                if b.get(i + 1) == Some(&q) {
                    return Err(AlterError::BackslashQuote);
                }
                i += 2;
            }
            Some(&c) if c == q && b.get(i + 1) != Some(&q) => return Ok(i + 1),
            Some(&c) => i += if c == q { 2 } else { 1 },
        }
    }
}

/// For the text after a decimal point: where the fraction and exponent end, and
/// whether the fraction has digits; None if it runs into a name, as in `12.t`.
fn fraction_end(b: &[u8], i: usize) -> Option<(usize, bool)> {
    let digits_end = |j: usize| j + b.iter().skip(j).take_while(|c| c.is_ascii_digit()).count();
    let mut j = digits_end(i);
    let has_digits = j > i;
    if matches!(b.get(j), Some(b'e' | b'E')) {
        let k = j + 1 + usize::from(matches!(b.get(j + 1), Some(b'+' | b'-')));
        j = digits_end(k);
        if j == k {
            return None;
        }
    }
    match b.get(j) {
        Some(&c) if is_ident_byte(c) => None,
        _ => Some((j, has_digits)),
    }
}

/// `ALTER [ONLINE|IGNORE] TABLE`: the user pasted a whole statement. A bare ALTER
/// is fine: it starts the ALTER COLUMN/INDEX specification.
fn is_whole_statement(spec: &[Token]) -> bool {
    spec.first().is_some_and(|t| t.is_word("ALTER"))
        && spec[1..]
            .iter()
            .find(|t| !t.is_word("ONLINE") && !t.is_word("IGNORE"))
            .is_some_and(|t| t.is_word("TABLE"))
}

/// Constructs refused wherever they appear, since they can follow other
/// specifications without a comma or sit deep inside them.
fn check_anywhere(tokens: &[Token]) -> Result<(), AlterError> {
    let text = |i: Option<usize>| i.and_then(|i| tokens.get(i)).map_or("", |t| t.text);
    for (n, t) in tokens.iter().enumerate() {
        let next_is = |w| tokens.get(n + 1).is_some_and(|t| t.is_word(w));
        match t.upper().as_str() {
            _ if t.kind == Kind::Punct('.') => {
                let (before, after) = (text(n.checked_sub(1)), text(Some(n + 1)));
                return Err(AlterError::QualifiedName(format!("{before}.{after}")));
            }
            _ if t.kind != Kind::Word => {}
            "FOREIGN" | "REFERENCES" => return Err(AlterError::ForeignKey),
            "PARTITION" => return Err(AlterError::Partition),
            "REMOVE" if next_is("PARTITIONING") => return Err(AlterError::Partition),
            "UNION" => return Err(AlterError::Union),
            _ => {}
        }
    }
    Ok(())
}

/// Splits at top-level commas, so `ADD INDEX k (a, b)` stays one specification.
fn split_specs<'t, 'a>(tokens: &'t [Token<'a>]) -> Result<Vec<&'t [Token<'a>]>, AlterError> {
    let (mut specs, mut depth, mut start) = (Vec::new(), 0usize, 0);
    for (n, t) in tokens.iter().enumerate() {
        match t.kind {
            Kind::Punct('(') => depth += 1,
            Kind::Punct(')') => {
                depth = depth
                    .checked_sub(1)
                    .ok_or(AlterError::UnbalancedParentheses)?
            }
            Kind::Punct(',') if depth == 0 => {
                specs.push(&tokens[start..n]);
                start = n + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(AlterError::UnbalancedParentheses);
    }
    specs.push(&tokens[start..]);
    if specs.iter().any(|s| s.is_empty()) {
        return Err(AlterError::EmptySpecification);
    }
    Ok(specs)
}

/// The most specific refusal for `spec[i]`, which may not start a specification or option.
fn refusal(spec: &[Token], i: usize) -> AlterError {
    let Some(t) = spec.get(i) else {
        return AlterError::EmptySpecification;
    };
    let next_is = |w| spec.get(i + 1).is_some_and(|n| n.is_word(w));
    match t.upper().as_str() {
        _ if t.kind != Kind::Word => AlterError::UnknownSpecification(t.text.to_string()),
        w @ ("ALGORITHM" | "LOCK") => AlterError::ExecutionOption(w.to_string()),
        "TABLESPACE" => AlterError::Tablespace,
        "DISCARD" | "IMPORT" if next_is("TABLESPACE") => AlterError::Tablespace,
        "COALESCE" | "REORGANIZE" | "EXCHANGE" => AlterError::Partition,
        _ => AlterError::UnknownSpecification(t.text.to_string()),
    }
}

/// Table options may be space-separated (`ENGINE=InnoDB TABLESPACE ts`), so every
/// option of the run is checked, not only the first.
fn check_table_options(spec: &[Token]) -> Result<(), AlterError> {
    let is = |i: usize, w: &str| spec.get(i).is_some_and(|t| t.is_word(w));
    let mut i = 0;
    while i < spec.len() {
        if is(i, "DEFAULT") {
            i += 1;
            if !(is(i, "CHARACTER") || is(i, "CHARSET") || is(i, "COLLATE")) {
                return Err(AlterError::BadTableOption("DEFAULT".into()));
            }
        }
        let name = match spec.get(i) {
            Some(t) if t.kind == Kind::Word && starter(&t.upper()) == Some(TableOption) => {
                t.upper()
            }
            _ => return Err(refusal(spec, i)),
        };
        i += 1;
        if name == "CHARACTER" {
            if !is(i, "SET") {
                return Err(AlterError::BadTableOption("CHARACTER SET".into()));
            }
            i += 1;
        }
        i += usize::from(spec.get(i).is_some_and(|t| t.kind == Kind::Punct('=')));
        let value =
            |t: &Token| matches!(t.kind, Kind::Word | Kind::Ident | Kind::Str | Kind::Number);
        if !spec.get(i).is_some_and(value) {
            return Err(AlterError::BadTableOption(name));
        }
        i += 1;
        // Adjacent literals concatenate, and `_utf8mb4'x'` is an introducer plus a literal.
        i += spec[i..].iter().take_while(|t| t.kind == Kind::Str).count();
    }
    Ok(())
}

fn push_rename(plan: &mut AlterPlan, old: String, new: String) {
    if old.to_lowercase() != new.to_lowercase() {
        plan.renames.push((old, new));
    }
}

fn check_spec(spec: &[Token], plan: &mut AlterPlan) -> Result<(), AlterError> {
    let is = |i: usize, w: &str| spec.get(i).is_some_and(|t| t.is_word(w));
    let name = |i: usize, after: &str| {
        let name = spec.get(i).and_then(Token::name);
        name.ok_or_else(|| AlterError::ExpectedColumnName(after.to_string()))
    };
    // MariaDB's optional `[COLUMN] [IF EXISTS]` before a column name.
    let name_at = |i: usize| {
        let i = i + usize::from(is(i, "COLUMN"));
        i + 2 * usize::from(is(i, "IF") && is(i + 1, "EXISTS"))
    };
    let word = match spec.first() {
        Some(t) if t.kind == Kind::Word => t.upper(),
        _ => return Err(refusal(spec, 0)),
    };
    match starter(&word) {
        Some(TableOption) => return check_table_options(spec),
        Some(Command) => {}
        None => return Err(refusal(spec, 0)),
    }
    match word.as_str() {
        "ALTER" if is_whole_statement(spec) => return Err(AlterError::WholeStatement),
        "RENAME" if is(1, "COLUMN") => {
            let i = name_at(1);
            let rc = "RENAME COLUMN";
            if !is(i + 1, "TO") {
                return Err(AlterError::ExpectedColumnName(rc.into()));
            }
            push_rename(plan, name(i, rc)?, name(i + 2, rc)?);
        }
        "RENAME" if is(1, "INDEX") || is(1, "KEY") => {}
        "RENAME" => return Err(AlterError::RenameTable),
        "CHANGE" => {
            let i = name_at(1);
            push_rename(plan, name(i, "CHANGE")?, name(i + 1, "CHANGE")?);
        }
        // SYSTEM and PERIOD are not reserved, so `DROP system` drops a column.
        "DROP"
            if NOT_COLUMNS.iter().any(|w| is(1, w))
                || (is(1, "SYSTEM") && is(2, "VERSIONING"))
                || (is(1, "PERIOD") && is(2, "FOR")) => {}
        "DROP" => {
            let i = name_at(1);
            plan.dropped.push(name(i, "DROP")?);
            // Anything more than RESTRICT/CASCADE means we misread it (`DROP TABLE users`).
            if spec.len() > i + 1 + usize::from(is(i + 1, "RESTRICT") || is(i + 1, "CASCADE")) {
                return Err(AlterError::ExpectedColumnName("DROP".into()));
            }
        }
        _ => {}
    }
    Ok(())
}

/// `ORDER BY a, b DESC` continues across top-level commas.
fn is_order_item(spec: &[Token]) -> bool {
    let name_ok = |t: &Token| {
        t.kind == Kind::Ident || (t.kind == Kind::Word && starter(&t.upper()).is_none())
    };
    match spec {
        [n] => name_ok(n),
        [n, dir] => name_ok(n) && (dir.is_word("ASC") || dir.is_word("DESC")),
        _ => false,
    }
}

/// Validates an ALTER clause and extracts the renames and drops it performs.
pub fn validate(clause: &str) -> Result<AlterPlan, AlterError> {
    let clause = clause.trim_matches(|c: char| u8::try_from(c).is_ok_and(is_space));
    if clause.is_empty() {
        return Err(AlterError::Empty);
    }
    let tokens = lex(clause)?;
    if is_whole_statement(&tokens) {
        return Err(AlterError::WholeStatement);
    }
    check_anywhere(&tokens)?;
    let (renames, dropped) = (Vec::new(), Vec::new());
    let mut plan = AlterPlan {
        clause: clause.to_string(),
        renames,
        dropped,
    };
    let mut in_order_by = false;
    for spec in split_specs(&tokens)? {
        if in_order_by && is_order_item(spec) {
            continue;
        }
        in_order_by = spec.first().is_some_and(|t| t.is_word("ORDER"));
        check_spec(spec, &mut plan)?;
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use AlterError::*;

    fn ok(clause: &str) -> AlterPlan {
        validate(clause).unwrap_or_else(|e| panic!("{clause:?} refused: {e}"))
    }

    /// Checks the plan extracts nothing and keeps the clause verbatim.
    fn ok_plain(clause: &str) {
        let p = ok(clause);
        assert_eq!(
            (p.clause.as_str(), p.renames, p.dropped),
            (clause, vec![], vec![])
        );
    }

    #[test]
    fn accepts_plain_lists() {
        ok_plain("ADD COLUMN c2 INT NOT NULL DEFAULT 0, ADD INDEX k2 (c2)");
        assert_eq!(ok("  \n ADD INDEX k (a, b)\t").clause, "ADD INDEX k (a, b)");
        for c in [
            "ADD COLUMN c VARCHAR(10) DEFAULT 'a;b -- c', ADD d TEXT DEFAULT \"x/*y*/#z\"",
            "ADD COLUMN `a.b;c` INT COMMENT 'it''s \\\\'",
            "ADD COLUMN c DECIMAL(5,2) DEFAULT 1.5, ADD d DOUBLE DEFAULT .5",
            "ADD COLUMN d DOUBLE DEFAULT -2.5e-3, ADD e INT DEFAULT (1 - -1)",
            "ADD CONSTRAINT ck CHECK (a > 0), ADD COLUMN IF NOT EXISTS c INT",
            "MODIFY c BIGINT, ALTER COLUMN d SET DEFAULT 5, ALTER INDEX k INVISIBLE",
            "ADD COLUMN algorithm INT, ADD COLUMN tablespace INT, ADD caf\u{e9} INT",
            "RENAME INDEX a TO b, RENAME KEY c TO d, DISABLE KEYS, ENABLE KEYS",
            "ENGINE=InnoDB, FORCE, ENGINE InnoDB ROW_FORMAT=DYNAMIC COMMENT 'x' 'y'",
            "DEFAULT CHARACTER SET = utf8mb4 COLLATE utf8mb4_bin, STATS_PERSISTENT=DEFAULT",
            "CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
            "ORDER BY a, `b` DESC, c",
        ] {
            ok_plain(c);
        }
    }

    #[test]
    fn extracts_renames_and_drops() {
        let renames = |c| ok(c).renames;
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(renames("CHANGE a b INT"), [pair("a", "b")]);
        assert_eq!(
            renames("CHANGE COLUMN a a BIGINT, CHANGE Ab aB INT, MODIFY a INT"),
            []
        );
        let c = "CHANGE COLUMN IF EXISTS `a``x` `b.c` INT, RENAME COLUMN d TO e";
        assert_eq!(renames(c), [pair("a`x", "b.c"), pair("d", "e")]);
        assert_eq!(
            renames("rename column if exists `x` to y"),
            [pair("x", "y")]
        );
        assert_eq!(ok("DROP COLUMN IF EXISTS z").dropped, ["z"]);
        assert_eq!(
            ok("drop a, DROP COLUMN `b``c` CASCADE").dropped,
            ["a", "b`c"]
        );
        assert_eq!(ok("DROP system, DROP period").dropped, ["system", "period"]);
        ok_plain("DROP INDEX k, DROP KEY k, DROP PRIMARY KEY, DROP CONSTRAINT c, DROP CHECK c");
        ok_plain("DROP SYSTEM VERSIONING, DROP PERIOD FOR SYSTEM_TIME");
    }

    #[test]
    fn refuses_each_kind() {
        let s = |w: &str| w.to_string();
        #[rustfmt::skip]
        let cases: &[(AlterError, &[&str])] = &[
            (Empty, &["", " \n\t "]),
            (Semicolon, &["ADD COLUMN x INT; DROP TABLE users", "FORCE;"]),
            (Comment, &["ADD COLUMN x INT /*! , DROP COLUMN y */", "ADD x INT /*M!1 , DROP y */"]),
            (Comment, &["ADD x INT /* a */", "ADD x INT -- a", "ADD x INT DEFAULT --1"]),
            (Comment, &["ADD x INT # a"]),
            (Unterminated('\''), &["ADD c INT COMMENT 'abc", "ADD c TEXT DEFAULT '\\\\''"]),
            (Unterminated('"'), &["ADD c INT COMMENT \"x\\\\"]),
            (Unterminated('`'), &["ADD COLUMN `c INT", "ADD COLUMN `c`` INT"]),
            (BackslashQuote, &["COMMENT 'a\\' ; DROP TABLE users; -- '"]),
            (BackslashQuote, &["COMMENT \"a\\\" , RENAME TO x, COMMENT \""]),
            (WholeStatement, &["ALTER TABLE t ADD COLUMN c INT", "alter online table t FORCE"]),
            (WholeStatement, &["ADD c INT, ALTER IGNORE TABLE t FORCE"]),
            (RenameTable, &["RENAME TO t2", "RENAME AS t2", "RENAME t2", "FORCE, rename `column`"]),
            (QualifiedName(s("db.x")), &["ADD COLUMN c INT AFTER db.x"]),
            (QualifiedName(s("`t`.`a`")), &["ADD COLUMN c INT AS (`t`.`a`)"]),
            (QualifiedName(s("\"t\".a")), &["ADD COLUMN c INT AS (\"t\".a)"]),
            (QualifiedName(s("t.a")), &["ORDER BY t .a"]),
            (QualifiedName(s("x.5")), &["ADD COLUMN c INT DEFAULT x.5"]),
            (QualifiedName(s("12.t")), &["ADD COLUMN c INT DEFAULT 12.t"]),
            (ForeignKey, &["ADD CONSTRAINT f FOREIGN KEY (a) REFERENCES p (id)"]),
            (ForeignKey, &["ADD COLUMN a INT REFERENCES p (id)", "DROP FOREIGN KEY f"]),
            (Partition, &["PARTITION BY HASH(id) PARTITIONS 4", "ADD PARTITION PARTITIONS 2"]),
            (Partition, &["ADD c INT PARTITION BY KEY() PARTITIONS 2", "DROP PARTITION p1"]),
            (Partition, &["TRUNCATE PARTITION p1", "COALESCE PARTITION 2", "COALESCE 2"]),
            (Partition, &["REORGANIZE PARTITION p1 INTO (PARTITION p2 VALUES LESS THAN (5))"]),
            (Partition, &["EXCHANGE PARTITION p1 WITH TABLE other", "ANALYZE PARTITION p1"]),
            (Partition, &["CHECK PARTITION ALL", "OPTIMIZE PARTITION p1", "REPAIR PARTITION p1"]),
            (Partition, &["REBUILD PARTITION p1", "REMOVE PARTITIONING"]),
            (Partition, &["ENGINE=InnoDB REMOVE PARTITIONING", "DISCARD PARTITION p1 TABLESPACE"]),
            (Partition, &["IMPORT PARTITION p1 TABLESPACE"]),
            (Tablespace, &["DISCARD TABLESPACE", "IMPORT TABLESPACE", "TABLESPACE = ts"]),
            (Tablespace, &["ENGINE=InnoDB TABLESPACE innodb_system"]),
            (ExecutionOption(s("ALGORITHM")), &["FORCE, ALGORITHM=INPLACE", "ENGINE=X ALGORITHM COPY"]),
            (ExecutionOption(s("LOCK")), &["lock none, ADD c INT"]),
            (Union, &["UNION = (t1, t2)", "ENGINE=MERGE UNION=(t1,t2)"]),
            (UnknownSpecification(s("SELECT")), &["SELECT 1", "FORCE, SELECT 1"]),
            (UnknownSpecification(s("GRANT")), &["ADD c INT, GRANT ALL ON *"]),
            (UnknownSpecification(s("`x`")), &["ADD c INT, `x` INT"]),
            (UnknownSpecification(s("(")), &["(a INT)"]),
            (UnknownSpecification(s("DATA")), &["DATA DIRECTORY = '/tmp'"]),
            (UnknownSpecification(s("CONNECTION")), &["ENGINE=X CONNECTION='mysql://h/d/t'"]),
            (UnknownSpecification(s("b")), &["ORDER BY a, b c"]),
            (UnknownSpecification(s("ADD\u{a0}COLUMN")), &["ADD\u{a0}COLUMN c INT"]),
            (EmptySpecification, &["ADD COLUMN x INT,", "ADD x INT,, FORCE", ", FORCE"]),
            (UnbalancedParentheses, &["ADD INDEX k (a, b", "ADD INDEX k a), DROP x, (b"]),
            (ExpectedColumnName(s("CHANGE")), &["CHANGE \"a\" \"b\" INT", "CHANGE a"]),
            (ExpectedColumnName(s("DROP")), &["DROP COLUMN 'a'", "DROP TABLE users"]),
            (ExpectedColumnName(s("RENAME COLUMN")), &["RENAME COLUMN a b", "RENAME COLUMN"]),
            (BadTableOption(s("ENGINE")), &["ENGINE", "ENGINE ="]),
            (BadTableOption(s("COMMENT")), &["COMMENT = (SELECT 1)"]),
            (BadTableOption(s("DEFAULT")), &["DEFAULT 1", "DEFAULT"]),
            (BadTableOption(s("CHARACTER SET")), &["CHARACTER utf8mb4"]),
        ];
        for (want, clauses) in cases {
            for clause in *clauses {
                assert_eq!(validate(clause).as_ref().err(), Some(want), "{clause:?}");
            }
        }
    }

    #[test]
    fn messages_name_problem_and_fix() {
        let want = "the ALTER clause contains ';': pass a single list of alter specifications \
                    for one table, without ';'";
        assert_eq!(Semicolon.to_string(), want);
        let lock = ExecutionOption("LOCK".into()).to_string();
        assert!(lock.contains("shadowcut chooses") && lock.contains("remove the LOCK"));
        assert!(ForeignKey.to_string().contains("not supported yet"));
    }
}

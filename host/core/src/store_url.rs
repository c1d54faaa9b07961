//! Store URLs: the one parser every adapter reads its URL with, and
//! [`redact`], which every message, log line and `health` report shows a
//! URL through.
//!
//! An adapter describes what it takes from a URL in a [`UrlRules`] — its
//! schemes, the options that are Xylem's rather than the driver's
//! (`prefix` for Redis, `schema` for PostgreSQL, `synchronous` for
//! SQLite) and what becomes of every other option — and
//! [`StoreUrl::parse`] applies the same rules to all of them:
//!
//! - Xylem's options are taken out of the query, their names and values
//!   percent-decoded (`?prefix=team%2Da` is `team-a`; as in any query
//!   string a `+` is a space). An option named twice is an error naming
//!   it, whatever the store. Named without a value (`?prefix`) it is the
//!   empty string, which no adapter accepts.
//! - Other options go to the driver exactly as written
//!   ([`OtherOptions::Driver`]: Redis, PostgreSQL), or are refused
//!   ([`OtherOptions::Refused`]: SQLite, which has no driver URL to pass
//!   them on in).
//! - A network URL is parsed with the `url` crate (the parser the Redis
//!   and PostgreSQL drivers use themselves), and [`StoreUrl::driver_url`]
//!   is that URL without Xylem's options, written out by the `url` crate
//!   (so normalised as the driver would read it anyway: `[0:0::1]` is
//!   `[::1]`, a space in the query `%20`).
//! - A file URL (SQLite) is **not** a URL with a host: in
//!   `sqlite://xylem.db` the `url` crate would read `xylem.db` as a host
//!   (and refuse a space in it, or resolve `..`). Its path is the text
//!   between `sqlite://` (or plain `sqlite:`) and the first `?`, taken as
//!   written, not percent-decoded: `sqlite://data/x.db` is relative to the
//!   current directory, `sqlite:///var/lib/x.db` absolute, `sqlite:x.db`
//!   the same as `sqlite://x.db`. Only the query follows the rules above.
//!
//! Errors are [`StoreError::Invalid`], name the option at fault and show
//! the URL redacted: a password never appears in one.

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};

use url::Url;

use crate::store::{StoreError, StoreResult};

/// What an adapter takes from its store URL.
#[derive(Debug, Clone, Copy)]
pub struct UrlRules {
    /// The store's name in messages: `Redis`, `PostgreSQL`, `SQLite`.
    pub store: &'static str,
    /// The schemes accepted, in lower case (a URL's scheme is compared
    /// case-insensitively); empty: any, and the driver decides.
    pub schemes: &'static [&'static str],
    /// Xylem's own options for this store, taken out of the query.
    pub options: &'static [&'static str],
    /// What becomes of every other option.
    pub others: OtherOptions,
    /// Whether the URL names a network address or a file.
    pub location: Location,
    /// A URL of this store that works, for messages (`redis://127.0.0.1:6379`).
    pub example: &'static str,
}

/// What becomes of a query option that is not one of Xylem's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtherOptions {
    /// Kept, as written, in [`StoreUrl::driver_url`] for the driver to
    /// read (Redis, PostgreSQL).
    Driver,
    /// Refused with an error naming it (SQLite: there is no driver to
    /// hand it to).
    Refused,
}

/// Where a store URL points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// A server: the URL is parsed as a URL and handed to the driver.
    Network,
    /// A file: the path is taken as written (see the module docs).
    File,
}

/// A parsed store URL. Its `Debug` shows the URL redacted.
#[derive(Clone)]
pub struct StoreUrl {
    scheme: String,
    options: Options,
    driver_url: String,
    file: Option<PathBuf>,
    redacted: String,
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreUrl")
            .field("url", &self.redacted)
            .finish_non_exhaustive()
    }
}

impl StoreUrl {
    /// Parses `raw` by `rules` (see the module docs).
    pub fn parse(raw: &str, rules: &UrlRules) -> StoreResult<Self> {
        let redacted = redact(raw);
        let Some(scheme) = scheme(raw) else {
            return Err(StoreError::Invalid(format!(
                "not a {} URL: {redacted} (try {})",
                rules.store, rules.example
            )));
        };
        if !rules.schemes.is_empty() && !rules.schemes.contains(&scheme.as_str()) {
            return Err(StoreError::Invalid(format!(
                "not a {} URL: {redacted} (try {})",
                rules.store, rules.example
            )));
        }
        match rules.location {
            Location::Network => Self::parse_network(raw, scheme, redacted, rules),
            Location::File => Self::parse_file(raw, scheme, redacted, rules),
        }
    }

    fn parse_network(
        raw: &str,
        scheme: String,
        redacted: String,
        rules: &UrlRules,
    ) -> StoreResult<Self> {
        let mut url = Url::parse(raw).map_err(|e| {
            StoreError::Invalid(format!(
                "invalid {} URL {redacted}: {e} (try {})",
                rules.store, rules.example
            ))
        })?;
        let query = url.query().map(str::to_owned);
        let (options, others) = take_options(query.as_deref().unwrap_or(""), rules, &redacted)?;
        if query.is_some() {
            let others = others.join("&");
            url.set_query((!others.is_empty()).then_some(others.as_str()));
        }
        Ok(Self {
            scheme,
            options,
            driver_url: url.into(),
            file: None,
            redacted,
        })
    }

    fn parse_file(
        raw: &str,
        scheme: String,
        redacted: String,
        rules: &UrlRules,
    ) -> StoreResult<Self> {
        // `scheme` is ASCII, so its length is where it ends in `raw` too.
        let rest = &raw[scheme.len() + 1..];
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        if path.is_empty() {
            return Err(StoreError::Invalid(format!(
                "the {} URL {redacted} names no file (try {})",
                rules.store, rules.example
            )));
        }
        let (options, others) = take_options(query, rules, &redacted)?;
        let mut driver_url = format!("{scheme}://{path}");
        if !others.is_empty() {
            driver_url.push('?');
            driver_url.push_str(&others.join("&"));
        }
        Ok(Self {
            scheme,
            options,
            driver_url,
            file: Some(PathBuf::from(path)),
            redacted,
        })
    }

    /// The scheme, in lower case.
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// The decoded value of one of Xylem's options (one of
    /// [`UrlRules::options`]), if the URL gives it.
    pub fn option(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, value)| value.as_str())
    }

    /// The URL for the driver: without Xylem's options, every other
    /// option as written. It may hold a password: show
    /// [`StoreUrl::redacted`] instead.
    pub fn driver_url(&self) -> &str {
        &self.driver_url
    }

    /// The file of a [`Location::File`] URL, as written.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The URL as given, without its password ([`redact`]).
    pub fn redacted(&self) -> &str {
        &self.redacted
    }
}

/// The scheme of `raw` in lower case (`sqlite`, `redis`, `postgresql`),
/// if it starts with one (a letter, then letters, digits, `+`, `-` or
/// `.`, then `:`; the same rule as the `url` crate's). Does not parse the
/// rest: a store is chosen by its scheme, and then parses its URL by its
/// own [`UrlRules`].
pub fn scheme(raw: &str) -> Option<String> {
    let (scheme, _) = raw.split_once(':')?;
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    valid.then(|| scheme.to_ascii_lowercase())
}

/// Xylem's options a URL gives: each name (from [`UrlRules::options`])
/// once, with its decoded value.
type Options = Vec<(&'static str, String)>;

/// Splits a raw query into Xylem's options (decoded) and the other
/// `key=value` pairs (as written), by `rules`.
fn take_options<'q>(
    query: &'q str,
    rules: &UrlRules,
    redacted: &str,
) -> StoreResult<(Options, Vec<&'q str>)> {
    let mut options = Options::new();
    let mut others = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = decode_pair(pair);
        if let Some(&name) = rules.options.iter().find(|name| **name == key) {
            if options.iter().any(|(n, _)| *n == name) {
                return Err(StoreError::Invalid(format!(
                    "the {} URL {redacted} names `{name}` twice: give it once",
                    rules.store
                )));
            }
            options.push((name, value.into_owned()));
        } else if rules.others == OtherOptions::Refused {
            let known = rules
                .options
                .iter()
                .map(|name| format!("`{name}`"))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(StoreError::Invalid(format!(
                "unknown {} URL option `{key}` in {redacted} (known: {known})",
                rules.store
            )));
        } else {
            others.push(pair);
        }
    }
    Ok((options, others))
}

/// One `key=value` pair of a query, decoded (`key` alone: an empty value).
fn decode_pair(pair: &str) -> (Cow<'_, str>, Cow<'_, str>) {
    url::form_urlencoded::parse(pair.as_bytes())
        .next()
        .unwrap_or((Cow::Borrowed(""), Cow::Borrowed("")))
}

/// The query options whose value is a secret: `password` (PostgreSQL)
/// and `pass` (Redis over a Unix socket), in any case.
fn is_secret(key: &str) -> bool {
    key.eq_ignore_ascii_case("password") || key.eq_ignore_ascii_case("pass")
}

/// `url` without its secrets, for every message, log line and `health`
/// report: the password of `user:password@host` becomes `***`, and so
/// does the value of a `password=` (or `pass=`) query option. A URL
/// without a secret comes back exactly as given. Input the `url` crate
/// cannot parse as a URL with a host is redacted by hand, erring towards
/// hiding too much: everything between the first `:` of what looks like
/// userinfo and the last `@`.
pub fn redact(url: &str) -> String {
    if let Ok(mut parsed) = Url::parse(url)
        && parsed.host().is_some()
    {
        let mut changed = false;
        if parsed.password().is_some() {
            if parsed.set_password(Some("***")).is_err() {
                return redact_by_hand(url);
            }
            changed = true;
        }
        if let Some(query) = parsed.query().map(str::to_owned)
            && let Cow::Owned(query) = redact_query(&query)
        {
            parsed.set_query(Some(&query));
            changed = true;
        }
        return if changed {
            parsed.into()
        } else {
            url.to_owned()
        };
    }
    redact_by_hand(url)
}

/// `query` with the values of its secret options replaced by `***`.
fn redact_query(query: &str) -> Cow<'_, str> {
    let secret = |pair: &str| pair.contains('=') && is_secret(&decode_pair(pair).0);
    if !query.split('&').any(secret) {
        return Cow::Borrowed(query);
    }
    let pairs: Vec<Cow<'_, str>> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if secret(pair) => Cow::Owned(format!("{key}=***")),
            _ => Cow::Borrowed(pair),
        })
        .collect();
    Cow::Owned(pairs.join("&"))
}

/// The best effort for text that is not a URL with a host: a
/// `user:password@` before the last `@` loses its password (the password
/// may hold `/`, `?` or `#` a URL would have needed encoded; without a
/// `://`, the text up to the first `:` is kept), and secret query options
/// their values.
fn redact_by_hand(text: &str) -> String {
    // Without `//`, whatever precedes the last `@` may be userinfo,
    // scheme and all (`redis:user:pw@host`).
    let (head, rest) = text
        .find("://")
        .map_or(("", text), |i| text.split_at(i + 3));
    let mut out = head.to_owned();
    let tail = match rest.rsplit_once('@') {
        Some((userinfo, tail)) => {
            match userinfo.split_once(':') {
                Some((user, _password)) => {
                    out.push_str(user);
                    out.push_str(":***@");
                }
                None => {
                    out.push_str(userinfo);
                    out.push('@');
                }
            }
            tail
        }
        None => rest,
    };
    match tail.split_once('?') {
        Some((before, query)) => {
            out.push_str(before);
            out.push('?');
            out.push_str(&redact_query(query));
        }
        None => out.push_str(tail),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const REDIS: UrlRules = UrlRules {
        store: "Redis",
        schemes: &[],
        options: &["prefix"],
        others: OtherOptions::Driver,
        location: Location::Network,
        example: "redis://127.0.0.1:6379",
    };
    const POSTGRES: UrlRules = UrlRules {
        store: "PostgreSQL",
        schemes: &["postgres", "postgresql"],
        options: &["schema"],
        others: OtherOptions::Driver,
        location: Location::Network,
        example: "postgres://user@host:5432/database",
    };
    const SQLITE: UrlRules = UrlRules {
        store: "SQLite",
        schemes: &["sqlite"],
        options: &["synchronous"],
        others: OtherOptions::Refused,
        location: Location::File,
        example: "sqlite://xylem.db",
    };

    fn invalid(raw: &str, rules: &UrlRules) -> String {
        match StoreUrl::parse(raw, rules) {
            Err(StoreError::Invalid(message)) => message,
            other => panic!("{raw} should be invalid, got {other:?}"),
        }
    }

    #[test]
    fn xylem_options_come_out_decoded_and_the_rest_goes_to_the_driver() {
        let url = StoreUrl::parse("redis://127.0.0.1:6379/2?prefix=team%2Da", &REDIS).unwrap();
        assert_eq!(url.scheme(), "redis");
        assert_eq!(url.option("prefix"), Some("team-a"));
        assert_eq!(url.driver_url(), "redis://127.0.0.1:6379/2");
        assert_eq!(url.file(), None);

        let url = StoreUrl::parse("redis://h:1", &REDIS).unwrap();
        assert_eq!(
            (url.driver_url(), url.option("prefix")),
            ("redis://h:1", None)
        );

        let url = StoreUrl::parse(
            "postgresql://u:p%40ss@h/db?sslmode=disable&schema=jobs_2&application_name=a%20b",
            &POSTGRES,
        )
        .unwrap();
        assert_eq!(url.scheme(), "postgresql");
        assert_eq!(url.option("schema"), Some("jobs_2"));
        assert_eq!(
            url.driver_url(),
            "postgresql://u:p%40ss@h/db?sslmode=disable&application_name=a%20b"
        );
        assert_eq!(
            url.redacted(),
            "postgresql://u:***@h/db?sslmode=disable&schema=jobs_2&application_name=a%20b"
        );

        // Names are decoded too; empty pairs are dropped.
        let url = StoreUrl::parse("postgres://h/db?&sch%65ma=x&&a=1", &POSTGRES).unwrap();
        assert_eq!(url.option("schema"), Some("x"));
        assert_eq!(url.driver_url(), "postgres://h/db?a=1");
        // A name alone is an empty value (which the adapters refuse).
        let url = StoreUrl::parse("redis://h?prefix", &REDIS).unwrap();
        assert_eq!(url.option("prefix"), Some(""));
        assert_eq!(url.driver_url(), "redis://h");
    }

    #[test]
    fn ipv6_hosts_and_the_postgresql_alias() {
        let url = StoreUrl::parse("redis://[::1]:6379?prefix=p", &REDIS).unwrap();
        assert_eq!(url.driver_url(), "redis://[::1]:6379");
        let url = StoreUrl::parse("redis://:pw@[::1]:6379/0", &REDIS).unwrap();
        assert_eq!(url.driver_url(), "redis://:pw@[::1]:6379/0");
        assert_eq!(url.redacted(), "redis://:***@[::1]:6379/0");
        let url = StoreUrl::parse("postgresql://u@[::1]:5432/db?schema=s", &POSTGRES).unwrap();
        assert_eq!(url.driver_url(), "postgresql://u@[::1]:5432/db");
        let url = StoreUrl::parse("POSTGRES://u@h/db", &POSTGRES).unwrap();
        assert_eq!(url.scheme(), "postgres");
        assert!(invalid("redis://[::1:6379", &REDIS).contains("invalid Redis URL"));
    }

    #[test]
    fn a_duplicate_option_is_an_error_naming_it() {
        for (raw, rules, name) in [
            ("redis://h?prefix=a&prefix=b", &REDIS, "prefix"),
            ("redis://h?prefix=a&prefix=a", &REDIS, "prefix"),
            ("postgres://h/db?schema=a&x=1&schema=b", &POSTGRES, "schema"),
            (
                "sqlite://x.db?synchronous=full&synchronous=full",
                &SQLITE,
                "synchronous",
            ),
            ("redis://h?prefix=a&pre%66ix=b", &REDIS, "prefix"),
        ] {
            let message = invalid(raw, rules);
            assert!(message.contains(&format!("`{name}` twice")), "{message}");
        }
        // Other options, even repeated, are the driver's business.
        let url = StoreUrl::parse("postgres://h/db?options=a&options=b", &POSTGRES).unwrap();
        assert_eq!(url.driver_url(), "postgres://h/db?options=a&options=b");
    }

    #[test]
    fn unknown_options_go_to_the_driver_or_are_refused() {
        let url = StoreUrl::parse("redis://h:1/0?protocol=resp3&prefix=p", &REDIS).unwrap();
        assert_eq!(url.driver_url(), "redis://h:1/0?protocol=resp3");
        let message = invalid("sqlite://x.db?journal=off", &SQLITE);
        assert!(
            message.contains("unknown SQLite URL option `journal`"),
            "{message}"
        );
        assert!(message.contains("`synchronous`"), "{message}");
        // PostgreSQL's own options are not Xylem's, however they look.
        assert!(invalid("sqlite://x.db?schema=a", &SQLITE).contains("`schema`"));
    }

    #[test]
    fn passwords_never_appear_in_errors() {
        for (raw, rules) in [
            ("redis://:s3cret@h?prefix=a&prefix=b", &REDIS),
            ("postgres://u:s3cret@h/db?schema=a&schema=b", &POSTGRES),
            (
                "postgres://u@h/db?password=s3cret&schema=a&schema=b",
                &POSTGRES,
            ),
            ("mysql://u:s3cret@h/db", &POSTGRES),
            ("postgres://u:s3cret@[::1/db", &POSTGRES),
            ("postgres://u:s3c/ret@/db", &POSTGRES),
            ("sqlite://x.db?password=s3cret", &SQLITE),
            (
                "sqlite://x.db?synchronous=1&synchronous=2&pass=s3cret",
                &SQLITE,
            ),
        ] {
            let message = invalid(raw, rules);
            assert!(!message.contains("s3cret"), "{raw}: {message}");
            assert!(message.contains("***"), "{raw}: {message}");
        }
        assert!(
            !format!(
                "{:?}",
                StoreUrl::parse("redis://:s3cret@h", &REDIS).unwrap()
            )
            .contains("s3cret")
        );
    }

    #[test]
    fn sqlite_paths_are_taken_as_written() {
        for (raw, path) in [
            ("sqlite://xylem.db", "xylem.db"),
            ("sqlite://data/x.db", "data/x.db"),
            ("sqlite://../x.db", "../x.db"),
            ("sqlite:///var/lib/x.db", "/var/lib/x.db"),
            ("sqlite:xylem.db", "xylem.db"),
            ("sqlite:/var/x.db", "/var/x.db"),
            ("SQLite://my dir/a%20b#1.db", "my dir/a%20b#1.db"),
            ("sqlite://x.db?synchronous=full", "x.db"),
            ("sqlite:///var/x.db?synchronous=f%75ll", "/var/x.db"),
        ] {
            let url = StoreUrl::parse(raw, &SQLITE).unwrap();
            assert_eq!(url.file(), Some(Path::new(path)), "{raw}");
            assert_eq!(url.scheme(), "sqlite");
        }
        let url = StoreUrl::parse("sqlite:///var/x.db?synchronous=f%75ll", &SQLITE).unwrap();
        assert_eq!(url.option("synchronous"), Some("full"));
        assert_eq!(url.driver_url(), "sqlite:///var/x.db");
        assert!(invalid("sqlite://", &SQLITE).contains("names no file"));
        assert!(invalid("sqlite://?synchronous=full", &SQLITE).contains("names no file"));
        assert!(invalid("sqlite:", &SQLITE).contains("names no file"));
        assert!(invalid("postgres://h/db", &SQLITE).contains("not a SQLite URL"));
        assert!(invalid("xylem.db", &SQLITE).contains("not a SQLite URL"));
    }

    #[test]
    fn schemes_are_read_before_the_rest() {
        assert_eq!(scheme("sqlite://my file.db").as_deref(), Some("sqlite"));
        assert_eq!(scheme("sqlite:x.db").as_deref(), Some("sqlite"));
        assert_eq!(scheme("Redis://h").as_deref(), Some("redis"));
        assert_eq!(scheme("redis+unix:///tmp/s").as_deref(), Some("redis+unix"));
        assert_eq!(scheme("memory://").as_deref(), Some("memory"));
        assert_eq!(scheme("not a url"), None);
        assert_eq!(scheme("/var/x.db"), None);
        assert_eq!(scheme("1x://h"), None);
        assert!(invalid("redis", &REDIS).contains("not a Redis URL"));
    }

    #[test]
    fn passwords_are_hidden_and_the_rest_is_kept() {
        assert_eq!(
            redact("redis://:s3cret@db:6379/0?prefix=prod"),
            "redis://:***@db:6379/0?prefix=prod"
        );
        assert_eq!(
            redact("postgres://xylem:p%40ss@db/jobs?schema=x&password=two"),
            "postgres://xylem:***@db/jobs?schema=x&password=***"
        );
        assert_eq!(
            redact("postgres://me:secret@h:5432/db?x=1"),
            "postgres://me:***@h:5432/db?x=1"
        );
        assert_eq!(
            redact("postgres://xylem@db/jobs"),
            "postgres://xylem@db/jobs"
        );
        assert_eq!(redact("postgres://me@h/db"), "postgres://me@h/db");
        assert_eq!(redact("sqlite://xylem.db"), "sqlite://xylem.db");
        assert_eq!(redact("not a url"), "not a url");
        assert_eq!(redact("nonsense"), "nonsense");
        // Case-insensitive, percent-encoded names, Redis's `pass`.
        assert_eq!(
            redact("postgres://h/db?PassWord=a&pass%77ord=b&user=u"),
            "postgres://h/db?PassWord=***&pass%77ord=***&user=u"
        );
        assert_eq!(
            redact("redis+unix:///tmp/redis.sock?db=1&pass=s3cret"),
            "redis+unix:///tmp/redis.sock?db=1&pass=***"
        );
        // Without a secret, exactly as given (not as the `url` crate
        // would write it).
        assert_eq!(redact("sqlite://data/../x.db"), "sqlite://data/../x.db");
        assert_eq!(redact("sqlite://my file.db"), "sqlite://my file.db");
        assert_eq!(redact("redis://[0:0::1]:6379"), "redis://[0:0::1]:6379");
    }

    #[test]
    fn unparsable_input_is_redacted_by_hand() {
        // Not URLs the `url` crate accepts; the password still goes.
        assert_eq!(
            redact("postgres://u:s3c ret@[::1/db"),
            "postgres://u:***@[::1/db"
        );
        assert_eq!(redact("postgres://u:s3c/ret@/db"), "postgres://u:***@/db");
        assert_eq!(redact("redis:u:s3cret@h"), "redis:***@h");
        assert_eq!(redact("u:s3cret@h"), "u:***@h");
        assert_eq!(
            redact("postgres://[h/db?password=s3cret"),
            "postgres://[h/db?password=***"
        );
        for raw in ["redis://:a@b@c:d@h", "x://u:p?w#d@h:1/?password=q"] {
            let redacted = redact(raw);
            assert!(redacted.contains("***"), "{raw}: {redacted}");
        }
    }
}

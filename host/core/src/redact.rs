//! Store URLs without their secrets, for every message, log line and
//! `health` report: the password of `user:password@host` becomes `***`,
//! and so does the value of a `password=` query option.

/// `url` with its password (userinfo or `?password=`) replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => {
                        format!("{key}=***")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_hidden_and_the_rest_is_kept() {
        assert_eq!(
            redact_url("redis://:s3cret@db:6379/0?prefix=prod"),
            "redis://:***@db:6379/0?prefix=prod"
        );
        assert_eq!(
            redact_url("postgres://xylem:p%40ss@db/jobs?schema=x&password=two"),
            "postgres://xylem:***@db/jobs?schema=x&password=***"
        );
        assert_eq!(
            redact_url("postgres://xylem@db/jobs"),
            "postgres://xylem@db/jobs"
        );
        assert_eq!(redact_url("sqlite://xylem.db"), "sqlite://xylem.db");
        assert_eq!(redact_url("not a url"), "not a url");
    }
}

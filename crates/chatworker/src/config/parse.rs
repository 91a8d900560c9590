//! Field parsers for settings: each reads one value and says what is wrong
//! with it, so that [`super::Settings::validate`] keeps only the rules that
//! join several settings.

use serde::{Deserialize, Deserializer, de::Error};
use std::str::FromStr;
use std::time::Duration;

/// `""` (the defaults' way of writing "none") as `None`, anything else
/// parsed with `T`'s `FromStr`.
pub(super) fn optional<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr<Err: std::fmt::Display>,
{
    let text = String::deserialize(d)?;
    match text.trim() {
        "" => Ok(None),
        text => text.parse().map(Some).map_err(D::Error::custom),
    }
}

/// An `https://` URL, or `http://` on this machine only (the simulator, a
/// local proxy): in plain HTTP a token would cross the network readable.
pub(super) fn url<'de, D: Deserializer<'de>>(d: D) -> Result<reqwest::Url, D::Error> {
    let text = String::deserialize(d)?;
    let url = reqwest::Url::parse(text.trim())
        .map_err(|e| D::Error::custom(format!("{text:?} is not a URL: {e}")))?;
    match url.scheme() {
        "https" if url.has_host() => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err(D::Error::custom(format!(
            "{text:?} is plain http:// to another machine; use https:// (http:// is for loopback only)"
        ))),
        _ => Err(D::Error::custom(format!(
            "{text:?} is not an http:// or https:// URL"
        ))),
    }
}

/// An `https://` URL, or none (`""`): an endpoint of Google's that is
/// never plain HTTP (the emulator has its own variable).
pub(super) fn optional_https_url<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<reqwest::Url>, D::Error> {
    let text = String::deserialize(d)?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    let url = reqwest::Url::parse(text.trim())
        .map_err(|e| D::Error::custom(format!("{text:?} is not a URL: {e}")))?;
    match url.scheme() {
        "https" if url.has_host() => Ok(Some(url)),
        _ => Err(D::Error::custom(format!(
            "{text:?} must be an https:// URL (the emulator is set with PUBSUB_EMULATOR_HOST)"
        ))),
    }
}

/// Whether `url` names this machine: `localhost`, 127.0.0.0/8 or `::1`.
fn is_loopback(url: &reqwest::Url) -> bool {
    url.host_str().is_some_and(|host| {
        host.eq_ignore_ascii_case("localhost")
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    })
}

/// A duration that is either `0s` (off) or at least `MIN_MS` milliseconds.
pub(super) fn off_or_at_least<'de, D, const MIN_MS: u64>(d: D) -> Result<Duration, D::Error>
where
    D: Deserializer<'de>,
{
    let value: Duration = humantime_serde::deserialize(d)?;
    let min = Duration::from_millis(MIN_MS);
    if !value.is_zero() && value < min {
        return Err(D::Error::custom(format!(
            "must be 0s (off) or at least {min:?}"
        )));
    }
    Ok(value)
}

/// A service account's email, `NAME@PROJECT.iam.gserviceaccount.com`;
/// `""` is none.
pub(super) fn service_account<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(d)?;
    match text.trim() {
        "" => Ok(None),
        email if email.contains('@') && !email.contains(char::is_whitespace) => {
            Ok(Some(email.to_owned()))
        }
        other => Err(D::Error::custom(format!(
            "{other:?} is not a service account email (NAME@PROJECT.iam.gserviceaccount.com)"
        ))),
    }
}

/// An integer between `MIN` and `MAX`, both included.
pub(super) fn int_in<'de, D, T, const MIN: i64, const MAX: i64>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Copy + Into<i64>,
{
    let value = T::deserialize(d)?;
    let n: i64 = value.into();
    if n < MIN {
        return Err(D::Error::custom(match MAX {
            i64::MAX => format!("must be at least {MIN}"),
            _ => format!("must be between {MIN} and {MAX}"),
        }));
    }
    if n > MAX {
        return Err(D::Error::custom(format!("must be between {MIN} and {MAX}")));
    }
    Ok(value)
}

/// A count between `MIN` and `MAX` (a `usize`, such as a concurrency).
pub(super) fn count_in<'de, D, const MIN: usize, const MAX: usize>(d: D) -> Result<usize, D::Error>
where
    D: Deserializer<'de>,
{
    let value = usize::deserialize(d)?;
    if !(MIN..=MAX).contains(&value) {
        return Err(D::Error::custom(format!("must be between {MIN} and {MAX}")));
    }
    Ok(value)
}

/// A duration written like `"20s"`, `"500ms"` or `"2m"`, between `MIN_MS`
/// and `MAX_MS` milliseconds.
pub(super) fn duration_in<'de, D, const MIN_MS: u64, const MAX_MS: u64>(
    d: D,
) -> Result<Duration, D::Error>
where
    D: Deserializer<'de>,
{
    let value: Duration = humantime_serde::deserialize(d)?;
    let (min, max) = (Duration::from_millis(MIN_MS), Duration::from_millis(MAX_MS));
    if value < min || value > max {
        return Err(D::Error::custom(match (MIN_MS, MAX_MS) {
            (1, u64::MAX) => "must be above zero".to_owned(),
            (_, u64::MAX) => format!("must be at least {min:?}"),
            _ => format!("must be between {min:?} and {max:?}"),
        }));
    }
    Ok(value)
}

/// A listening address, `IP:PORT` (`127.0.0.1:9090`, `0.0.0.0:9090`);
/// `""` is none.
pub(super) fn listen<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<std::net::SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    match text.trim() {
        "" => Ok(None),
        addr => addr.parse().map(Some).map_err(|_| {
            D::Error::custom(format!(
                "{addr:?} is not IP:PORT (127.0.0.1:9090 on a workstation, 0.0.0.0:9090 in a pod)"
            ))
        }),
    }
}

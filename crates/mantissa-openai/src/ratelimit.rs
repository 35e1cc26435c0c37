//! `Retry-After` and `x-ratelimit-*` headers of a 429 response.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;

/// What a rate-limited response said about its limits.
///
/// OpenAI sends `x-ratelimit-limit-requests`, `x-ratelimit-remaining-tokens`,
/// `x-ratelimit-reset-requests` (`"6m0s"`, `"20ms"`) and so on; other
/// providers send subsets or variants. The parsed fields cover OpenAI's names;
/// [`RateLimit::headers`] keeps every `x-ratelimit-*` header verbatim.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimit {
    /// How long the provider asked us to wait: `retry-after-ms`, else
    /// `Retry-After` in seconds or as an HTTP date.
    pub retry_after: Option<Duration>,
    /// `x-ratelimit-limit-requests`.
    pub limit_requests: Option<u64>,
    /// `x-ratelimit-limit-tokens`.
    pub limit_tokens: Option<u64>,
    /// `x-ratelimit-remaining-requests`.
    pub remaining_requests: Option<u64>,
    /// `x-ratelimit-remaining-tokens`.
    pub remaining_tokens: Option<u64>,
    /// `x-ratelimit-reset-requests`, parsed from a duration such as `1s` or `6m0s`.
    pub reset_requests: Option<Duration>,
    /// `x-ratelimit-reset-tokens`, parsed like `reset_requests`.
    pub reset_tokens: Option<Duration>,
    /// Every `x-ratelimit-*` header (lowercase name, value), in arrival order.
    pub headers: Vec<(String, String)>,
}

impl RateLimit {
    /// Reads the rate-limit headers, resolving an HTTP-date `Retry-After`
    /// against `now`.
    pub fn from_headers(headers: &HeaderMap, now: SystemTime) -> Self {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
        let number = |name: &str| text(name).and_then(|v| v.parse::<u64>().ok());
        let mut all = Vec::new();
        for (name, value) in headers {
            if name.as_str().starts_with("x-ratelimit-") {
                if let Ok(v) = value.to_str() {
                    all.push((name.as_str().to_owned(), v.to_owned()));
                }
            }
        }
        Self {
            retry_after: retry_after(headers, now),
            limit_requests: number("x-ratelimit-limit-requests"),
            limit_tokens: number("x-ratelimit-limit-tokens"),
            remaining_requests: number("x-ratelimit-remaining-requests"),
            remaining_tokens: number("x-ratelimit-remaining-tokens"),
            reset_requests: text("x-ratelimit-reset-requests").and_then(parse_duration),
            reset_tokens: text("x-ratelimit-reset-tokens").and_then(parse_duration),
            headers: all,
        }
    }
}

/// `retry-after-ms` (milliseconds), else `Retry-After` (delta seconds, or an
/// IMF-fixdate resolved against `now`; a date in the past is zero).
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        if ms.is_finite() && ms >= 0.0 {
            return Some(Duration::from_secs_f64((ms / 1000.0).min(MAX_WAIT.as_secs_f64())));
        }
    }
    let value = text("retry-after")?;
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::from_secs_f64(secs.min(1e9)).min(MAX_WAIT));
    }
    let at = parse_http_date(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO).min(MAX_WAIT))
}

/// A bound on any wait a header can ask for (one day), so absurd values cannot
/// park a model forever.
const MAX_WAIT: Duration = Duration::from_secs(86_400);

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the only date
/// format RFC 9110 lets senders generate.
pub(crate) fn parse_http_date(s: &str) -> Option<SystemTime> {
    let mut parts = s.split_whitespace();
    let _weekday = parts.next()?.strip_suffix(',')?;
    let day: u32 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':');
    let hour: u64 = hms.next()?.parse().ok()?;
    let minute: u64 = hms.next()?.parse().ok()?;
    let second: u64 = hms.next()?.parse().ok()?;
    if parts.next()? != "GMT" || parts.next().is_some() || hms.next().is_some() {
        return None;
    }
    if !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 || !(1970..=9999).contains(&year) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = u64::try_from(days).ok()? * 86_400 + hour * 3600 + minute * 60 + second;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses a Go-style duration (`1s`, `6m0s`, `1h2m3.5s`, `20ms`) or a bare
/// number of seconds.
pub(crate) fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(secs) = s.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(1e9)));
    }
    let mut total = 0.0_f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * factor;
    }
    (total.is_finite() && total >= 0.0).then(|| Duration::from_secs_f64(total.min(1e9)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn http_date_matches_known_epoch_seconds() {
        let t = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(t.duration_since(UNIX_EPOCH).unwrap().as_secs(), 784_111_777);
        let t = parse_http_date("Thu, 29 Feb 2024 00:00:00 GMT").unwrap();
        assert_eq!(t.duration_since(UNIX_EPOCH).unwrap().as_secs(), 1_709_164_800);
        assert!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT").is_none());
        assert!(parse_http_date("Sun, 06 Nov 1994 08:49:37 PST").is_none());
        assert!(parse_http_date("").is_none());
        assert!(parse_http_date("Sun, 99 Nov 1994 08:49:37 GMT").is_none());
    }

    #[test]
    fn retry_after_forms() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_770);
        assert_eq!(
            retry_after(&headers(&[("retry-after", "7")]), now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT")]), now),
            Some(Duration::from_secs(7))
        );
        // A date in the past means "now".
        assert_eq!(
            retry_after(&headers(&[("retry-after", "Sun, 06 Nov 1994 08:49:00 GMT")]), now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after-ms", "1500"), ("retry-after", "9")]), now),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")]), now), None);
        assert_eq!(retry_after(&headers(&[("retry-after", "-3")]), now), None);
        assert_eq!(
            retry_after(&headers(&[("retry-after", "99999999999")]), now),
            Some(MAX_WAIT)
        );
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
        assert_eq!(
            retry_after(&headers(&[("retry-after-ms", "1e300")]), now),
            Some(MAX_WAIT)
        );
    }

    /// `y-m-d h:m:s` of a Unix time (the inverse of `days_from_civil`).
    fn civil(secs: u64) -> (i64, u32, u32, u64, u64, u64) {
        let days = i64::try_from(secs / 86_400).unwrap() + 719_468;
        let era = days.div_euclid(146_097);
        let doe = days - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap();
        let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap();
        let year = yoe + era * 400 + i64::from(month <= 2);
        let rest = secs % 86_400;
        (year, month, day, rest / 3600, rest % 3600 / 60, rest % 60)
    }

    proptest::proptest! {
        /// Every IMF-fixdate from 1970 to 9999 parses back to its instant.
        #[test]
        fn http_dates_round_trip(secs in 0_u64..253_402_300_800) {
            const MONTHS: [&str; 12] =
                ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
            let (y, mo, d, h, mi, s) = civil(secs);
            let text = format!("Thu, {d:02} {} {y:04} {h:02}:{mi:02}:{s:02} GMT", MONTHS[mo as usize - 1]);
            proptest::prop_assert_eq!(
                parse_http_date(&text),
                Some(UNIX_EPOCH + Duration::from_secs(secs)),
                "{}", text
            );
        }

        /// Go durations add up their parts; any text gives nothing or a
        /// bounded duration.
        #[test]
        fn durations_add_up_and_stay_bounded(
            h in 0_u64..10_000, m in 0_u64..60, s in 0_u64..60, ms in 0_u64..1000,
            junk in "\\PC{0,40}",
        ) {
            let whole = h * 3600 + m * 60 + s;
            proptest::prop_assert_eq!(parse_duration(&format!("{h}h{m}m{s}s")), Some(Duration::from_secs(whole)));
            proptest::prop_assert_eq!(parse_duration(&format!("{whole}")), Some(Duration::from_secs(whole)));
            let with_ms = parse_duration(&format!("{m}m{s}s{ms}ms")).unwrap();
            let expected = Duration::from_millis((m * 60 + s) * 1000 + ms);
            proptest::prop_assert!(with_ms.abs_diff(expected) < Duration::from_micros(1), "{:?}", with_ms);
            if let Some(d) = parse_duration(&junk) {
                proptest::prop_assert!(d <= Duration::from_secs(1_000_000_000), "{:?}", d);
            }
        }

        /// `Retry-After` in seconds is taken up to the one-day cap; whatever a
        /// header says, the wait never exceeds it. Rate-limit numbers are
        /// read exactly, and every `x-ratelimit-*` header is kept verbatim.
        #[test]
        fn retry_after_is_capped_and_counts_are_exact(
            secs in 0_u64..10_000_000,
            n in proptest::num::u64::ANY,
            junk in "[ -~]{0,40}",
        ) {
            let now = SystemTime::now();
            let mut h = HeaderMap::new();
            h.insert("retry-after", HeaderValue::from_str(&secs.to_string()).unwrap());
            h.insert("x-ratelimit-remaining-tokens", HeaderValue::from_str(&n.to_string()).unwrap());
            let rl = RateLimit::from_headers(&h, now);
            proptest::prop_assert_eq!(rl.retry_after, Some(Duration::from_secs(secs).min(MAX_WAIT)));
            proptest::prop_assert_eq!(rl.remaining_tokens, Some(n));

            let mut h = HeaderMap::new();
            let value = HeaderValue::from_str(&junk).unwrap();
            for name in ["retry-after", "retry-after-ms", "x-ratelimit-limit-tokens"] {
                h.insert(name, value.clone());
            }
            let rl = RateLimit::from_headers(&h, now);
            proptest::prop_assert!(rl.retry_after.is_none_or(|d| d <= MAX_WAIT), "{:?}", rl.retry_after);
            proptest::prop_assert_eq!(rl.limit_tokens, junk.trim().parse::<u64>().ok());
            proptest::prop_assert_eq!(rl.headers, vec![("x-ratelimit-limit-tokens".to_owned(), junk.clone())]);
        }
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_duration("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(parse_duration("20ms"), Some(Duration::from_millis(20)));
        assert_eq!(parse_duration("1h2m3.5s"), Some(Duration::from_millis(3_723_500)));
        assert_eq!(parse_duration("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1x"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn reads_openai_rate_limit_headers() {
        let h = headers(&[
            ("retry-after", "2"),
            ("x-ratelimit-limit-requests", "60"),
            ("x-ratelimit-limit-tokens", "150000"),
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-remaining-tokens", "149984"),
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-reset-tokens", "6m0s"),
            ("x-ratelimit-custom", "kept"),
        ]);
        let rl = RateLimit::from_headers(&h, SystemTime::now());
        assert_eq!(rl.retry_after, Some(Duration::from_secs(2)));
        assert_eq!(rl.limit_requests, Some(60));
        assert_eq!(rl.limit_tokens, Some(150_000));
        assert_eq!(rl.remaining_requests, Some(0));
        assert_eq!(rl.remaining_tokens, Some(149_984));
        assert_eq!(rl.reset_requests, Some(Duration::from_secs(1)));
        assert_eq!(rl.reset_tokens, Some(Duration::from_secs(360)));
        assert_eq!(rl.headers.len(), 7);
        assert!(
            rl.headers
                .contains(&("x-ratelimit-custom".to_owned(), "kept".to_owned()))
        );
    }
}

//! Scrubbing the API key out of errors.
//!
//! Providers echo the credential back: in an error message, in `error.param`,
//! `code` or `type`, in a 200 body holding an error object, in an SSE error
//! event, or quoted by a parse error of a malformed body. Rather than scrub
//! each place an error is built, every error the client hands out — the `Err`
//! of a call and every `Err` item of its chunk stream — passes through
//! [`Redactor`] once, in [`OpenAiClient::send`](crate::OpenAiClient::send).
//! It rewrites the message and walks the whole `source()` chain: the client's
//! own error types are scrubbed field by field and keep their types (so
//! `api_error`, `classify` and `downcast_ref` still work); a foreign error
//! (serde, reqwest, io) whose text shows the key is replaced by a plain copy
//! of its chain's text with the key replaced.

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use mantissa_core::{BoxError, LlmError};

use crate::error::{ApiError, InvalidResponse, TimeoutError, TransportError};

/// What replaces the key.
pub(crate) const REDACTED: &str = "[REDACTED]";

/// Replaces the API key, as it may appear in text (raw, JSON-escaped or
/// `Debug`-escaped), with [`REDACTED`]. Cheap to clone; without a key every
/// method returns its input.
#[derive(Clone, Default)]
pub(crate) struct Redactor {
    forms: Arc<[Box<str>]>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor").finish_non_exhaustive()
    }
}

impl Redactor {
    /// A redactor of `secret`; an empty secret redacts nothing.
    pub(crate) fn new(secret: Option<&str>) -> Self {
        let Some(secret) = secret.filter(|s| !s.is_empty()) else {
            return Self::default();
        };
        // The raw key, its JSON escape, and its `Debug` escape nested up to
        // three deep (a `Debug` of an error whose message quotes the key with
        // `{:?}`, inside another `Debug`). For the usual key of letters,
        // digits, `-` and `_` these are all the same string.
        let unquote = |q: String| {
            q.strip_prefix('"')
                .and_then(|q| q.strip_suffix('"'))
                .map(str::to_owned)
                .unwrap_or(q)
        };
        let mut forms: Vec<Box<str>> = vec![secret.into()];
        let mut candidates = vec![unquote(serde_json::to_string(secret).unwrap_or_default())];
        let mut escaped = secret.to_owned();
        for _ in 0..3 {
            escaped = unquote(format!("{escaped:?}"));
            candidates.push(escaped.clone());
        }
        for form in candidates {
            if !form.is_empty() && !forms.iter().any(|f| **f == *form) {
                forms.push(form.into());
            }
        }
        Self { forms: forms.into() }
    }

    fn is_active(&self) -> bool {
        !self.forms.is_empty()
    }

    /// `text` with every form of the key replaced.
    pub(crate) fn text<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for form in self.forms.iter() {
            if out.contains(&**form) {
                out = Cow::Owned(out.replace(&**form, REDACTED));
            }
        }
        out
    }

    fn string(&self, s: &mut String) {
        if let Cow::Owned(clean) = self.text(s) {
            *s = clean;
        }
    }

    fn option(&self, s: &mut Option<String>) {
        if let Some(s) = s {
            self.string(s);
        }
    }

    /// Whether the text of `err` or of any of its sources shows the key.
    fn shows_key(&self, err: &(dyn StdError + 'static)) -> bool {
        let mut current = Some(err);
        while let Some(e) = current {
            let shown = format!("{e}\n{e:?}");
            if self.forms.iter().any(|f| shown.contains(&**f)) {
                return true;
            }
            current = e.source();
        }
        false
    }

    /// `err` with the key scrubbed from its message and its whole source chain.
    pub(crate) fn llm_error(&self, err: LlmError) -> LlmError {
        if !self.is_active() {
            return err;
        }
        let class = err.class();
        let status = err.status();
        let message = self.text(err.message()).into_owned();
        let mut out = LlmError::new(class, message);
        if let Some(status) = status {
            out = out.with_status(status);
        }
        match err.into_source() {
            Some(source) => out.with_source(self.boxed(source)),
            None => out,
        }
    }

    /// A boxed error (a stream item's) with the key scrubbed.
    pub(crate) fn boxed(&self, err: BoxError) -> BoxError {
        if !self.is_active() {
            return err;
        }
        let err = match err.downcast::<LlmError>() {
            Ok(e) => return Box::new(self.llm_error(*e)),
            Err(e) => e,
        };
        let err = match err.downcast::<ApiError>() {
            Ok(mut e) => {
                self.api_error(&mut e);
                return e;
            }
            Err(e) => e,
        };
        let err = match err.downcast::<InvalidResponse>() {
            Ok(mut e) => {
                self.string(&mut e.detail);
                e.source = e.source.take().map(|s| self.boxed(s));
                return e;
            }
            Err(e) => e,
        };
        let err = match err.downcast::<TimeoutError>() {
            Ok(mut e) => {
                e.source = e.source.take().map(|s| self.boxed(s));
                return e;
            }
            Err(e) => e,
        };
        let err = match err.downcast::<TransportError>() {
            Ok(mut e) => {
                e.source = e.source.take().map(|s| self.boxed(s));
                return e;
            }
            Err(e) => e,
        };
        if self.shows_key(&*err) {
            Box::new(Redacted::of(&*err, self))
        } else {
            err
        }
    }

    fn api_error(&self, e: &mut ApiError) {
        self.string(&mut e.message);
        self.option(&mut e.error_type);
        self.option(&mut e.code);
        self.option(&mut e.param);
        self.string(&mut e.body);
        self.option(&mut e.request_id);
        if let Some(rate_limit) = &mut e.rate_limit {
            for (_, value) in &mut rate_limit.headers {
                self.string(value);
            }
        }
    }
}

/// A foreign error whose text showed the key: its `Display` and `Debug`
/// text, and its sources', with the key replaced.
#[derive(Clone)]
pub(crate) struct Redacted {
    display: String,
    debug: String,
    source: Option<Box<Redacted>>,
}

impl Redacted {
    fn of(err: &(dyn StdError + 'static), redactor: &Redactor) -> Self {
        Self {
            display: redactor.text(&err.to_string()).into_owned(),
            debug: redactor.text(&format!("{err:?}")).into_owned(),
            source: err.source().map(|s| Box::new(Self::of(s, redactor))),
        }
    }
}

impl fmt::Display for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.debug)
    }
}

impl StdError for Redacted {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mantissa_core::{FailureClass, classify};

    const KEY: &str = "sk-\"quoted\\key";

    #[test]
    fn every_form_of_the_key_is_replaced_and_types_survive() {
        let r = Redactor::new(Some(KEY));
        // Raw, JSON-escaped and Debug-escaped forms.
        let json = serde_json::to_string(KEY).unwrap();
        let debug = format!("{KEY:?}");
        for text in [KEY.to_owned(), json, debug] {
            let clean = r.text(&format!("a {text} b")).into_owned();
            assert!(clean.contains(REDACTED), "{clean}");
            assert!(!clean.contains("quoted"), "{clean}");
        }
        assert!(matches!(r.text("nothing here"), Cow::Borrowed(_)));

        let parse = serde_json::from_str::<Vec<u8>>(&serde_json::to_string(KEY).unwrap()).unwrap_err();
        let inv = InvalidResponse::new(crate::InvalidResponseKind::MalformedJson, format!("bad {KEY}"))
            .with_source(parse);
        let err = LlmError::new(FailureClass::InvalidResponse, format!("malformed: {KEY}"))
            .with_status(200)
            .with_source(
                TimeoutError::new(crate::TimeoutKind::Idle, std::time::Duration::ZERO).with_source(inv),
            );
        let err = r.llm_error(err);
        assert_eq!(err.status(), Some(200));
        assert_eq!(classify(&err), FailureClass::InvalidResponse);
        assert!(
            crate::timeout_error(&err).is_some(),
            "our own types keep their type"
        );
        let mut shown = String::new();
        let mut current: Option<&(dyn StdError + 'static)> = Some(&err);
        while let Some(e) = current {
            shown.push_str(&format!("{e} {e:?}\n"));
            current = e.source();
        }
        assert!(!shown.contains("quoted"), "{shown}");
        assert!(shown.contains(&format!("bad {REDACTED}")), "{shown}");
    }

    #[test]
    fn without_a_key_nothing_changes() {
        let r = Redactor::new(Some(""));
        let err = LlmError::new(FailureClass::Other, "sk-abc");
        assert_eq!(r.llm_error(err).message(), "sk-abc");
        assert_eq!(Redactor::new(None).text("sk-abc"), "sk-abc");
    }
}

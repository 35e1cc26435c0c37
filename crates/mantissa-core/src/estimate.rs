//! Token estimation for messages that the provider has not counted yet.
//!
//! mantissa never rescans a whole history to count tokens: the provider's
//! reported prompt tokens are the base, and only messages added since are
//! estimated. The default estimator is deliberately cheap (bytes / 4, the rule
//! of thumb OpenAI documents for English text); a real tokenizer can be plugged
//! in through the [`TokenEstimator`] trait.

use crate::message::Message;

/// Estimates token counts of text and messages.
pub trait TokenEstimator: Send + Sync {
    /// Estimated tokens of a piece of text.
    fn estimate_text(&self, text: &str) -> u32;

    /// Estimated tokens of one message, including its framing overhead.
    fn estimate_message(&self, message: &Message) -> u32 {
        let mut n = MESSAGE_OVERHEAD_TOKENS.saturating_add(self.estimate_text(message.text()));
        for call in &message.tool_calls {
            n = n
                .saturating_add(self.estimate_text(&call.function.name))
                .saturating_add(self.estimate_text(&call.function.arguments))
                .saturating_add(MESSAGE_OVERHEAD_TOKENS);
        }
        n
    }

    /// Estimated tokens of several messages.
    fn estimate_messages(&self, messages: &[Message]) -> u64 {
        messages.iter().fold(0_u64, |n, m| {
            n.saturating_add(u64::from(self.estimate_message(m)))
        })
    }
}

/// Framing tokens per message (role markers and separators), as in OpenAI's
/// published counting recipe for chat models.
pub const MESSAGE_OVERHEAD_TOKENS: u32 = 4;

/// The default estimator: one token per four bytes, rounded up.
#[derive(Debug, Clone, Copy, Default)]
pub struct CharEstimator;

impl TokenEstimator for CharEstimator {
    fn estimate_text(&self, text: &str) -> u32 {
        u32::try_from(text.len().div_ceil(4)).unwrap_or(u32::MAX)
    }
}

impl<F> TokenEstimator for F
where
    F: Fn(&str) -> u32 + Send + Sync,
{
    fn estimate_text(&self, text: &str) -> u32 {
        self(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn char_estimator_rounds_up() {
        assert_eq!(CharEstimator.estimate_text(""), 0);
        assert_eq!(CharEstimator.estimate_text("abc"), 1);
        assert_eq!(CharEstimator.estimate_text("abcde"), 2);
        assert_eq!(
            CharEstimator.estimate_message(&Message::user("abcd")),
            1 + MESSAGE_OVERHEAD_TOKENS
        );
    }

    /// A closure plugged in as an estimator drives the trait's message
    /// methods: the text, tool-call names and arguments it is given, the
    /// overheads added, and the totals saturating instead of overflowing.
    #[test]
    fn a_closure_estimator_drives_message_estimates() {
        use crate::message::{FunctionCall, ToolCall};

        let seen = std::sync::Mutex::new(Vec::new());
        let words = |t: &str| {
            seen.lock().unwrap().push(t.to_owned());
            u32::try_from(t.split_whitespace().count()).unwrap()
        };
        let mut call = Message::assistant("let me check");
        call.tool_calls.push(ToolCall {
            id: "c1".into(),
            kind: "function".into(),
            function: FunctionCall {
                name: "lookup".into(),
                arguments: r#"{"q": "a b"}"#.into(),
            },
        });
        let estimator: &dyn TokenEstimator = &words;
        // 3 words + overhead; then "lookup" (1) + arguments (3) + overhead.
        assert_eq!(estimator.estimate_message(&call), 3 + 4 + 4 + 4);
        assert_eq!(
            *seen.lock().unwrap(),
            ["let me check", "lookup", r#"{"q": "a b"}"#]
        );
        let history = [Message::user("one two three"), call];
        assert_eq!(estimator.estimate_messages(&history), (3 + 4) + 15);

        let huge = |_: &str| u32::MAX;
        assert_eq!(huge.estimate_message(&history[1]), u32::MAX);
        assert_eq!(huge.estimate_messages(&history), 2 * u64::from(u32::MAX));
    }
}

//! Templates of routine titles and descriptions: `{{date}}` and `{{payload.<key>}}`, rendered
//! into an issue at dispatch, within a bound on the output that holds while it is built.

use serde_json::Value;

/// Substitutes `{{date}}` and `{{payload.<key>}}` (dotted keys reach into nested objects;
/// strings as they are, other values as JSON, missing values as nothing), keeping at most
/// `max_chars` characters.
pub(crate) fn render(template: &str, date: &str, payload: &Value, max_chars: usize) -> String {
    // The output is bounded while it is built, never after: a template of many placeholders
    // over a large payload would otherwise make each dispatch allocate their product.
    let mut out = Bounded::new(max_chars);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let Some(end) = rest[start + 2..].find("}}") else {
            break;
        };
        if !out.push(&rest[..start]) {
            return out.text;
        }
        let name = rest[start + 2..start + 2 + end].trim();
        let room = if name == "date" {
            out.push(date)
        } else if let Some(path) = name.strip_prefix("payload.") {
            let value = path.split('.').try_fold(payload, |v, key| v.get(key));
            match value {
                Some(Value::String(s)) => out.push(s),
                Some(Value::Null) | None => true,
                Some(other) => out.push_json(other),
            }
        } else {
            out.push(&rest[start..start + 2 + end + 2])
        };
        if !room {
            return out.text;
        }
        rest = &rest[start + 2 + end + 2..];
    }
    out.push(rest);
    out.text
}

/// Text that grows to at most a number of characters and refuses the rest.
struct Bounded {
    text: String,
    left: usize,
}

impl Bounded {
    fn new(max_chars: usize) -> Self {
        Self {
            text: String::new(),
            left: max_chars,
        }
    }

    /// Appends what fits of `s`; `false` once full.
    fn push(&mut self, s: &str) -> bool {
        for c in s.chars() {
            if self.left == 0 {
                return false;
            }
            self.text.push(c);
            self.left -= 1;
        }
        self.left > 0
    }

    /// Appends what fits of `value` as JSON, serialising no more than can fit (a character
    /// is at most four bytes).
    fn push_json(&mut self, value: &Value) -> bool {
        let mut capped = Capped(Vec::new(), self.left.saturating_add(1).saturating_mul(4));
        // Running out of room ends the serialisation early: what was written is kept, up to its
        // last whole character.
        drop(serde_json::to_writer(&mut capped, value));
        let written = match std::str::from_utf8(&capped.0) {
            Ok(text) => text,
            Err(e) => std::str::from_utf8(&capped.0[..e.valid_up_to()]).unwrap_or_default(),
        };
        self.push(written)
    }
}

/// A buffer that takes at most its capacity in bytes and refuses the rest, so a serialiser
/// writing into it stops early instead of producing all of a large value.
struct Capped(Vec<u8>, usize);

impl std::io::Write for Capped {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let room = self.1 - self.0.len();
        if room == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let n = bytes.len().min(room);
        self.0.extend_from_slice(&bytes[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn rendering_stops_at_the_limit_whatever_the_template_and_payload() {
        let big = "x".repeat(250_000);
        let payload = json!({ "a": big, "o": { "k": big } });
        let template = "{{payload.a}}{{payload.o}}".repeat(770);
        let out = render(&template, "2026-11-29", &payload, 10_000);
        assert_eq!(out.chars().count(), 10_000);
        assert!(
            out.capacity() < 64 * 1024,
            "built within the bound: {}",
            out.capacity()
        );
        let json = render("{{payload.o}}", "", &payload, 12);
        assert_eq!(json, "{\"k\":\"xxxxxx");
        let short = render("a{{payload.n}}b", "", &json!({ "n": 1 }), 10);
        assert_eq!(short, "a1b");
    }

    #[test]
    fn a_large_value_is_serialised_only_as_far_as_it_can_be_shown() {
        use std::io::Write as _;
        let mut capped = Capped(Vec::new(), 4);
        assert_eq!(capped.write(b"abcdefgh").expect("room"), 4);
        assert!(capped.write(b"i").is_err(), "full");
        assert_eq!(capped.0, b"abcd");
        let big = json!({ "k": "x".repeat(1_000_000) });
        let mut capped = Capped(Vec::new(), 40);
        assert!(serde_json::to_writer(&mut capped, &big).is_err());
        assert_eq!(capped.0.len(), 40);
    }

    #[test]
    fn templates_substitute_date_and_payload_keys() {
        let payload = json!({ "topic": "billing", "n": 3, "deep": { "key": "v" }, "list": [1, 2] });
        let render = |t: &str| render(t, "2026-11-29", &payload, 200);
        assert_eq!(render("Report {{date}}"), "Report 2026-11-29");
        assert_eq!(render("{{ payload.topic }} x{{payload.n}}"), "billing x3");
        assert_eq!(render("{{payload.deep.key}} {{payload.list}}"), "v [1,2]");
        assert_eq!(render("[{{payload.missing}}]"), "[]");
        assert_eq!(render("{{other}} {{date"), "{{other}} {{date");
        assert_eq!(
            super::render(&"é".repeat(300), "", &payload, 200)
                .chars()
                .count(),
            200
        );
    }
}

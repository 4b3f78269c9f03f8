//! Golden questions: an operator's questions with the keywords a right answer holds (and
//! the page it cites), kept per bot, judged after every crawl, and a question that passed
//! and now fails recorded as a regression (`bot.regressed`). The rules live here; the
//! check that runs them is `services::golden`, the CLI's `docent eval questions`.

use crate::chat::Answer;
pub use crate::domain::{GoldenQuestion, GoldenRun, NewQuestion, Regression, Verdict};

/// Golden questions a bot may keep.
pub const MAX_QUESTIONS: usize = 50;
/// Keywords one question may list, and the length of each.
pub const MAX_KEYWORDS: usize = 20;
pub const MAX_KEYWORD_CHARS: usize = 200;
/// The longest question and expected URL.
pub const MAX_QUESTION_CHARS: usize = 1000;
pub const MAX_URL_CHARS: usize = 2048;
/// The longest answer kept with a result (and sent in `bot.regressed`).
pub const MAX_ANSWER_CHARS: usize = 1000;

impl NewQuestion {
    /// The question trimmed, or why it cannot be kept.
    pub fn validated(self) -> Result<NewQuestion, String> {
        let texts = std::iter::once(&self.question)
            .chain(&self.expected_answer_keywords)
            .chain(&self.source_url);
        let control = |c: char| c.is_control() && c != '\n' && c != '\t';
        if texts.flat_map(|t| t.chars()).any(control) {
            return Err("golden questions hold no control characters".into());
        }
        let question = self.question.trim().to_string();
        if question.is_empty() {
            return Err("question is empty".into());
        }
        if question.chars().count() > MAX_QUESTION_CHARS {
            return Err(format!("question is over {MAX_QUESTION_CHARS} characters"));
        }
        if self.expected_answer_keywords.len() > MAX_KEYWORDS {
            return Err(format!("at most {MAX_KEYWORDS} expected_answer_keywords"));
        }
        let keywords: Vec<String> = self
            .expected_answer_keywords
            .iter()
            .map(|k| k.trim().to_string())
            .collect();
        if keywords.iter().any(|k| k.is_empty()) {
            return Err("an expected answer keyword is empty".into());
        }
        if keywords
            .iter()
            .any(|k| k.chars().count() > MAX_KEYWORD_CHARS)
        {
            return Err(format!(
                "an expected answer keyword is over {MAX_KEYWORD_CHARS} characters"
            ));
        }
        let source_url = self.source_url.map(|u| u.trim().to_string());
        if source_url
            .as_ref()
            .is_some_and(|u| u.is_empty() || u.chars().count() > MAX_URL_CHARS)
        {
            return Err(format!(
                "source_url must be 1 to {MAX_URL_CHARS} characters"
            ));
        }
        Ok(NewQuestion {
            question,
            expected_answer_keywords: keywords,
            source_url,
        })
    }
}

/// Whether `answer` passes, and why (or why not).
pub fn judge(case: &NewQuestion, answer: &Answer) -> (bool, &'static str) {
    if case.expected_answer_keywords.is_empty() {
        return if answer.answered {
            (false, "answered a question it should decline")
        } else {
            (true, "declined")
        };
    }
    if !answer.answered {
        return (false, "declined");
    }
    let lower = answer.answer.to_lowercase();
    if let Some(missing) = case
        .expected_answer_keywords
        .iter()
        .find(|k| !lower.contains(&k.to_lowercase()))
    {
        return (
            false,
            if missing.is_empty() {
                "empty keyword"
            } else {
                "missing a keyword"
            },
        );
    }
    if let Some(url) = &case.source_url
        && !answer.sources.iter().any(|s| same_page(&s.url, url))
    {
        return (false, "did not cite the expected page");
    }
    (true, "ok")
}

impl GoldenQuestion {
    pub fn new(id: String, case: NewQuestion, created: u64) -> GoldenQuestion {
        GoldenQuestion {
            id,
            question: case.question,
            expected_answer_keywords: case.expected_answer_keywords,
            source_url: case.source_url,
            created,
            last: None,
            regression: None,
        }
    }

    /// What the question asks for, to judge an answer by.
    pub fn case(&self) -> NewQuestion {
        NewQuestion {
            question: self.question.clone(),
            expected_answer_keywords: self.expected_answer_keywords.clone(),
            source_url: self.source_url.clone(),
        }
    }

    /// Records a check's verdict; the regression it reveals, if it newly failed a question
    /// the last check passed. A pass clears an earlier regression.
    pub fn record(&mut self, verdict: Verdict) -> Option<Regression> {
        let turned = match (&self.last, verdict.passed) {
            (Some(last), false) if last.passed => Some(Regression {
                old_answer: last.answer.clone(),
                new_answer: verdict.answer.clone(),
                reason: verdict.reason.clone(),
                since: verdict.checked,
                job_id: verdict.job_id.clone(),
            }),
            _ => None,
        };
        if verdict.passed {
            self.regression = None;
        } else if turned.is_some() {
            self.regression = turned.clone();
        }
        self.last = Some(verdict);
        turned
    }
}

/// Whether a cited URL is the expected page: the same URL, or that page at an anchor (a
/// PDF's `#page=N`, which the pages list shows without it).
fn same_page(cited: &str, expected: &str) -> bool {
    cited == expected
        || cited
            .split_once('#')
            .is_some_and(|(page, _)| page == expected)
}

/// `text` cut to `MAX_ANSWER_CHARS` characters.
pub fn clip_answer(text: &str) -> String {
    match text.char_indices().nth(MAX_ANSWER_CHARS) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(text: &str, answered: bool, cited: &[&str]) -> Answer {
        Answer {
            answer: text.into(),
            answered,
            sources: cited
                .iter()
                .map(|url| crate::chat::SourceRef {
                    url: url.to_string(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn case(keywords: &[&str], url: Option<&str>) -> NewQuestion {
        NewQuestion {
            question: "How long does shipping take?".into(),
            expected_answer_keywords: keywords.iter().map(|k| k.to_string()).collect(),
            source_url: url.map(str::to_string),
        }
    }

    #[test]
    fn an_answer_passes_with_every_keyword_and_the_expected_page_or_a_decline_when_none() {
        let shipping = "https://a.example/shipping";
        let said = answer("Shipping takes 3 Days.", true, &[shipping]);
        assert_eq!(
            judge(&case(&["3 days", "shipping"], Some(shipping)), &said),
            (true, "ok")
        );
        assert_eq!(
            judge(&case(&["5 days"], None), &said).1,
            "missing a keyword"
        );
        let pdf = "https://a.example/policy.pdf";
        let on_page = answer(
            "Shipping takes 3 days.",
            true,
            &["https://a.example/policy.pdf#page=2"],
        );
        assert_eq!(judge(&case(&["3 days"], Some(pdf)), &on_page), (true, "ok"));
        let elsewhere = case(&["3 days"], Some("https://a.example/faq"));
        assert_eq!(judge(&elsewhere, &said).1, "did not cite the expected page");
        let declined = answer("I don't know.", false, &[]);
        assert_eq!(judge(&case(&["3 days"], None), &declined).1, "declined");
        assert_eq!(judge(&case(&[], None), &declined), (true, "declined"));
        assert!(!judge(&case(&[], None), &said).0);
    }

    #[test]
    fn a_question_regresses_when_a_pass_turns_into_a_failure_and_recovers_on_a_pass() {
        let verdict = |passed: bool, answer: &str, at: u64| Verdict {
            passed,
            reason: if passed { "ok" } else { "missing a keyword" }.into(),
            answer: answer.into(),
            sources: vec![],
            checked: at,
            job_id: Some(format!("job_{at}")),
        };
        let new = NewQuestion::validated(case(&["3 days"], None)).unwrap();
        let mut q = GoldenQuestion::new("gq_1".into(), new, 1);
        // A first failure is no regression: it never passed.
        assert_eq!(q.record(verdict(false, "no idea", 2)), None);
        assert_eq!(q.record(verdict(true, "3 days", 3)), None);
        let turned = q.record(verdict(false, "5 days", 4)).expect("a regression");
        assert_eq!(
            (
                turned.old_answer.as_str(),
                turned.new_answer.as_str(),
                turned.since
            ),
            ("3 days", "5 days", 4)
        );
        assert_eq!(turned.job_id.as_deref(), Some("job_4"));
        assert_eq!(q.regression, Some(turned.clone()));
        // Still failing: the same regression, not a new one.
        assert_eq!(q.record(verdict(false, "6 days", 5)), None);
        assert_eq!(q.regression, Some(turned));
        assert_eq!(q.record(verdict(true, "3 days", 6)), None);
        assert_eq!(q.regression, None);
    }

    #[test]
    fn a_question_is_trimmed_and_bounded() {
        let ok = NewQuestion {
            question: "  Where is the shop?  ".into(),
            expected_answer_keywords: vec![" Main Street ".into()],
            source_url: None,
        };
        let ok = ok.validated().unwrap();
        assert_eq!(
            (
                ok.question.as_str(),
                ok.expected_answer_keywords[0].as_str()
            ),
            ("Where is the shop?", "Main Street")
        );
        for bad in [
            case(&["x"], None).tap(|c| c.question = " ".into()),
            case(&[" "], None),
            case(&["x"], Some("")),
            case(&vec!["k"; MAX_KEYWORDS + 1], None),
            case(&["x"], None).tap(|c| c.question = "q".repeat(MAX_QUESTION_CHARS + 1)),
            case(&["a\u{0}b"], None),
            case(&["x"], None).tap(|c| c.question = "Why\u{7}?".into()),
        ] {
            assert!(bad.clone().validated().is_err(), "{bad:?}");
        }
    }

    trait Tap: Sized {
        fn tap(self, f: impl FnOnce(&mut Self)) -> Self;
    }

    impl Tap for NewQuestion {
        fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
            f(&mut self);
            self
        }
    }
}

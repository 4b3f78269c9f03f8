//! Per-bot analytics over stored conversations: per-day counts and rates, latency
//! percentiles, intents, the unanswered questions grouped by meaning (the content an
//! operator should add next), and the golden questions' last check with their regressions. Used by `GET /v1/bots/{id}/analytics` and `docent analytics`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::domain::BotId;
use crate::embed::Embedder;
use crate::ports::Storage;

/// Two unanswered questions at least this similar (cosine of their embeddings) are the
/// same gap.
pub const GAP_SIMILARITY: f32 = 0.6;

/// The date range of an analytics request: `to` defaults to today, `from` to 29 days
/// before `to` (UTC days since the epoch).
pub fn analytics_range(from: Option<&str>, to: Option<&str>) -> Result<(i64, i64), String> {
    let parse = |name: &str, text: &str| {
        parse_date(text).ok_or_else(|| format!("{name} {text:?} is not a date like 2026-11-27"))
    };
    let to = match to {
        Some(text) => parse("to", text)?,
        None => (crate::telemetry::unix_now() / 86_400) as i64,
    };
    let from = match from {
        Some(text) => parse("from", text)?,
        None => to - 29,
    };
    if from > to {
        return Err("from is after to".into());
    }
    if to - from >= 366 {
        return Err("the range is limited to 366 days".into());
    }
    Ok((from, to))
}
/// Gaps listed, largest first.
pub const MAX_GAPS: usize = 10;

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Percentiles {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
}

/// One day's numbers (or the whole range's, in `totals`).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Day {
    /// `YYYY-MM-DD` (UTC); absent in totals.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    /// Conversations started.
    pub conversations: u64,
    /// Every message: visitors', the bot's and agents'.
    pub messages: u64,
    /// Replies the bot wrote (not counting handoff notices).
    pub replies: u64,
    pub answered: u64,
    pub unanswered: u64,
    /// Of the conversations started that day, those handed to a person.
    pub handoffs: u64,
    pub leads: u64,
    /// Visitors' ratings given that day (each answer counted by its last rating).
    pub feedback_up: u64,
    pub feedback_down: u64,
    /// Shares of `replies`; of `conversations` for handoffs. Null when there were none.
    pub answered_rate: Option<f64>,
    pub unanswered_rate: Option<f64>,
    pub handoff_rate: Option<f64>,
    /// Time to first token and to the whole answer, in milliseconds.
    pub ttft_ms: Percentiles,
    pub latency_ms: Percentiles,
}

/// Unanswered questions that ask the same thing.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Gap {
    pub count: u64,
    /// The question closest to the group's centre.
    pub question: String,
    /// Up to five distinct questions of the group.
    pub examples: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub bot_id: BotId,
    pub from: String,
    pub to: String,
    pub totals: Day,
    pub days: Vec<Day>,
    /// Conversations per chosen intent.
    pub intents: BTreeMap<String, u64>,
    /// The content gaps: unanswered questions grouped by meaning, largest first.
    pub unanswered_questions: Vec<Gap>,
    /// Questions whose answers visitors rated down, grouped the same way.
    pub rated_down_questions: Vec<Gap>,
    /// How the bot's golden questions did at their last check, and those regressed.
    pub golden_questions: GoldenSummary,
}

/// The golden questions at their last check (after the bot's last crawl or upload).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct GoldenSummary {
    pub total: usize,
    pub passing: usize,
    pub failing: usize,
    /// Added since the last check.
    pub unchecked: usize,
    /// Questions that passed and fail since a later check, most recent first.
    pub regressed: Vec<Regressed>,
}

/// A regressed golden question: what it answered when it passed, and what it answers now.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Regressed {
    pub question_id: String,
    pub question: String,
    pub old_answer: String,
    pub new_answer: String,
    pub reason: String,
    /// When it turned (unix s), and after which job.
    pub since: u64,
    pub job_id: Option<String>,
}

/// The summary of `questions`' last checks.
pub fn golden_summary(questions: &[crate::golden::GoldenQuestion]) -> GoldenSummary {
    let checked = |passed: bool| {
        questions
            .iter()
            .filter(|q| q.last.as_ref().is_some_and(|v| v.passed == passed))
            .count()
    };
    let mut regressed: Vec<Regressed> = questions
        .iter()
        .filter_map(|q| {
            let r = q.regression.as_ref()?;
            Some(Regressed {
                question_id: q.id.clone(),
                question: q.question.clone(),
                old_answer: r.old_answer.clone(),
                new_answer: r.new_answer.clone(),
                reason: r.reason.clone(),
                since: r.since,
                job_id: r.job_id.clone(),
            })
        })
        .collect();
    regressed.sort_by_key(|r| std::cmp::Reverse(r.since));
    GoldenSummary {
        total: questions.len(),
        passing: checked(true),
        failing: checked(false),
        unchecked: questions.iter().filter(|q| q.last.is_none()).count(),
        regressed,
    }
}

#[derive(Default)]
struct Tally {
    day: Day,
    ttft: Vec<f64>,
    latency: Vec<f64>,
}

impl Tally {
    fn finish(mut self, date: Option<String>) -> Day {
        let share = |n: u64, of: u64| (of > 0).then(|| n as f64 / of as f64);
        self.day.date = date;
        self.day.answered_rate = share(self.day.answered, self.day.replies);
        self.day.unanswered_rate = share(self.day.unanswered, self.day.replies);
        self.day.handoff_rate = share(self.day.handoffs, self.day.conversations);
        self.day.ttft_ms = percentiles(&mut self.ttft);
        self.day.latency_ms = percentiles(&mut self.latency);
        self.day
    }
}

fn percentiles(values: &mut [f64]) -> Percentiles {
    if values.is_empty() {
        return Percentiles::default();
    }
    values.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let rank = (q * values.len() as f64).ceil() as usize;
        values[rank.clamp(1, values.len()) - 1]
    };
    Percentiles {
        p50: Some(at(0.5)),
        p95: Some(at(0.95)),
    }
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date.
pub fn parse_date(text: &str) -> Option<i64> {
    let mut parts = text.trim().splitn(3, '-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let d: i64 = parts.next()?.parse().ok()?;
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let days = days_from_civil(y, m, d);
    // Rejects 2026-02-31 and the like.
    (format_date(days) == format!("{y:04}-{m:02}-{d:02}")).then_some(days)
}

/// Howard Hinnant's `days_from_civil`.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD` of days since 1970-01-01 (Hinnant's `civil_from_days`).
pub fn format_date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn day_of(unix: u64) -> i64 {
    (unix / 86_400) as i64
}

/// The report for `bot` over the days `from..=to` (days since the epoch, UTC). Unanswered
/// questions are grouped with `embedder`; without one each distinct question is a group.
pub fn report(
    store: &dyn Storage,
    embedder: Option<&dyn Embedder>,
    bot: &BotId,
    from: i64,
    to: i64,
) -> anyhow::Result<Report> {
    anyhow::ensure!(from <= to, "from is after to");
    anyhow::ensure!(to - from < 366 * 5, "the range is limited to five years");
    let mut days: BTreeMap<i64, Tally> = (from..=to).map(|d| (d, Tally::default())).collect();
    let mut totals = Tally::default();
    let mut intents = BTreeMap::new();
    let mut unanswered = Vec::new();
    let mut rated_down = Vec::new();
    let conversations = store.list_conversations(Some(bot), None, None, usize::MAX)?;
    for conversation in conversations {
        let started = day_of(conversation.created);
        let messages = store.messages(&conversation.id)?;
        if messages.is_empty() {
            continue;
        }
        if (from..=to).contains(&started) {
            for tally in [days.get_mut(&started), Some(&mut totals)]
                .into_iter()
                .flatten()
            {
                tally.day.conversations += 1;
            }
            if let Some(intent) = &conversation.intent {
                *intents.entry(intent.clone()).or_insert(0u64) += 1;
            }
        }
        // Counted with the day the conversation started, so the rate is a share of that
        // day's conversations.
        if conversation.handed_off_at.is_some() && (from..=to).contains(&started) {
            for tally in [days.get_mut(&started), Some(&mut totals)]
                .into_iter()
                .flatten()
            {
                tally.day.handoffs += 1;
            }
        }
        let mut last_question: Option<&str> = None;
        for message in &messages {
            let day = day_of(message.created);
            if message.role == crate::domain::Role::User {
                last_question = Some(&message.content);
            }
            if !(from..=to).contains(&day) {
                continue;
            }
            let is_reply = message.role == crate::domain::Role::Assistant
                && message.finish_reason.as_deref() != Some("handed_off");
            for tally in [days.get_mut(&day), Some(&mut totals)]
                .into_iter()
                .flatten()
            {
                tally.day.messages += 1;
                if !is_reply {
                    continue;
                }
                tally.day.replies += 1;
                match message.answered {
                    Some(true) => tally.day.answered += 1,
                    _ if message.finish_reason.as_deref() == Some("unanswered") => {
                        tally.day.unanswered += 1
                    }
                    _ => {}
                }
                tally.ttft.extend(message.ttft_ms.map(|v| v as f64));
                tally.latency.extend(message.total_ms.map(|v| v as f64));
            }
            if is_reply
                && message.finish_reason.as_deref() == Some("unanswered")
                && let Some(question) = last_question
            {
                unanswered.push(question.to_string());
            }
        }
        count_feedback(
            &messages,
            from..=to,
            &mut days,
            &mut totals,
            &mut rated_down,
        );
    }
    for lead in store.leads(bot, None, usize::MAX)? {
        let day = day_of(lead.created);
        if (from..=to).contains(&day) {
            for tally in [days.get_mut(&day), Some(&mut totals)]
                .into_iter()
                .flatten()
            {
                tally.day.leads += 1;
            }
        }
    }
    Ok(Report {
        bot_id: bot.clone(),
        from: format_date(from),
        to: format_date(to),
        totals: totals.finish(None),
        days: days
            .into_iter()
            .map(|(day, tally)| tally.finish(Some(format_date(day))))
            .collect(),
        intents,
        unanswered_questions: group_questions(embedder, &unanswered)?,
        rated_down_questions: group_questions(embedder, &rated_down)?,
        golden_questions: golden_summary(&store.get_bot(bot)?.settings.golden),
    })
}

/// Counts a conversation's ratings on the days they were given, and collects the questions
/// whose answers were rated down.
fn count_feedback(
    messages: &[crate::domain::Message],
    range: std::ops::RangeInclusive<i64>,
    days: &mut BTreeMap<i64, Tally>,
    totals: &mut Tally,
    rated_down: &mut Vec<String>,
) {
    let mut last_question: Option<&str> = None;
    for message in messages {
        if message.role == crate::domain::Role::User {
            last_question = Some(&message.content);
        }
        let Some(feedback) = &message.feedback else {
            continue;
        };
        let day = day_of(feedback.at);
        if !range.contains(&day) {
            continue;
        }
        let down = feedback.rating == crate::domain::Rating::Down;
        for tally in [days.get_mut(&day), Some(&mut *totals)]
            .into_iter()
            .flatten()
        {
            if down {
                tally.day.feedback_down += 1;
            } else {
                tally.day.feedback_up += 1;
            }
        }
        if down && let Some(question) = last_question {
            rated_down.push(question.to_string());
        }
    }
}

/// Groups questions that ask the same thing: each question joins the group whose centre
/// it is most similar to (at least `GAP_SIMILARITY`), or starts a new one. Largest first.
pub fn group_questions(
    embedder: Option<&dyn Embedder>,
    questions: &[String],
) -> anyhow::Result<Vec<Gap>> {
    if questions.is_empty() {
        return Ok(Vec::new());
    }
    let key = |q: &str| {
        q.to_lowercase()
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    };
    // Identical questions (up to case and punctuation) count together from the start.
    let mut distinct: Vec<(String, u64)> = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    for q in questions {
        match index.get(&key(q)) {
            Some(&i) => distinct[i].1 += 1,
            None => {
                index.insert(key(q), distinct.len());
                distinct.push((q.trim().to_string(), 1));
            }
        }
    }
    let vectors: Vec<Vec<f32>> = match embedder {
        Some(embedder) => {
            let texts: Vec<&str> = distinct.iter().map(|(q, _)| q.as_str()).collect();
            let mut out = Vec::with_capacity(texts.len());
            for batch in texts.chunks(64) {
                out.extend(embedder.embed(batch)?);
            }
            out
        }
        None => Vec::new(),
    };
    struct Group {
        members: Vec<usize>,
        centre: Vec<f32>,
    }
    let cosine = |a: &[f32], b: &[f32]| -> f32 {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        dot / (norm(a) * norm(b)).max(1e-9)
    };
    let mut groups: Vec<Group> = Vec::new();
    // Most asked first, so groups form around them.
    let mut order: Vec<usize> = (0..distinct.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(distinct[i].1));
    for i in order {
        let best = vectors.get(i).and_then(|v| {
            groups
                .iter()
                .enumerate()
                .map(|(g, group)| (g, cosine(v, &group.centre)))
                .filter(|(_, s)| *s >= GAP_SIMILARITY)
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(g, _)| g)
        });
        match best {
            Some(g) => {
                let group = &mut groups[g];
                let weight = distinct[i].1 as f32;
                let before: f32 = group.members.iter().map(|&m| distinct[m].1 as f32).sum();
                for (c, x) in group.centre.iter_mut().zip(&vectors[i]) {
                    *c = (*c * before + x * weight) / (before + weight);
                }
                group.members.push(i);
            }
            None => groups.push(Group {
                members: vec![i],
                centre: vectors.get(i).cloned().unwrap_or_default(),
            }),
        }
    }
    let mut gaps: Vec<Gap> = groups
        .into_iter()
        .map(|group| {
            let count = group.members.iter().map(|&m| distinct[m].1).sum();
            let central = group
                .members
                .iter()
                .copied()
                .max_by(|&a, &b| {
                    let score = |m: usize| {
                        vectors.get(m).map_or(0.0, |v| cosine(v, &group.centre))
                            + distinct[m].1 as f32 * 1e-3
                    };
                    score(a).total_cmp(&score(b))
                })
                .unwrap_or(group.members[0]);
            Gap {
                count,
                question: distinct[central].0.clone(),
                examples: group
                    .members
                    .iter()
                    .take(5)
                    .map(|&m| distinct[m].0.clone())
                    .collect(),
            }
        })
        .collect();
    gaps.sort_by(|a, b| b.count.cmp(&a.count).then(a.question.cmp(&b.question)));
    gaps.truncate(MAX_GAPS);
    Ok(gaps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_and_invalid_ones_are_refused() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2026-11-27"), Some(20_784));
        assert_eq!(format_date(20_784), "2026-11-27");
        assert_eq!(format_date(parse_date("2024-02-29").unwrap()), "2024-02-29");
        for bad in ["2026-02-30", "2026-13-01", "26-1-1", "yesterday", "2026-11"] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut values: Vec<f64> = (1..=20).map(f64::from).collect();
        let p = percentiles(&mut values);
        assert_eq!((p.p50, p.p95), (Some(10.0), Some(19.0)));
        assert_eq!(percentiles(&mut []), Percentiles::default());
    }

    #[test]
    fn similar_questions_group_largest_first() {
        // The bag-of-words fake groups by shared words; grouping by meaning with the real
        // embedder is tested in tests/api/cli.rs (`analytics_cli_...`).
        let embedder = crate::embed::FakeEmbedder::default();
        let questions: Vec<String> = [
            "Do you ship to Canada?",
            "do you ship to canada",
            "Do you ship to Canada and Mexico?",
            "What is your refund policy for gift cards?",
        ]
        .iter()
        .map(|q| q.to_string())
        .collect();
        let gaps = group_questions(Some(&embedder), &questions).unwrap();
        assert_eq!(gaps[0].count, 3, "{gaps:?}");
        assert_eq!(gaps[0].question, "Do you ship to Canada?");
        assert_eq!(gaps.len(), 2, "{gaps:?}");
        assert_eq!(gaps[1].count, 1);
        // Without an embedder, only identical questions group.
        assert_eq!(group_questions(None, &questions).unwrap().len(), 3);
    }
}

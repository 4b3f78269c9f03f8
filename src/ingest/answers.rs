//! Curated answers: a question an operator answered once (from the console's Gaps page or
//! the API), kept as a page of its bot at `answer:<id>` with one chunk (the question as
//! its title, the answer as its text), so retrieval finds it for the same question asked
//! in other words and answers cite it like any page. Crawls keep these pages (they are not
//! the site's), `docent reindex` re-embeds them like the rest, and each change is one
//! ingest commit.

use std::sync::Arc;

use super::pages::{commit, read};
use super::{current_embedder, discard_if_failed, stage_batch};
use crate::domain::{BotId, Chunk, Page};
use crate::embed::{Embedders, minilm_id};
use crate::ports::ContentStore;

/// The URL scheme of a curated answer's page: `answer:ans_…`.
pub const SCHEME: &str = "answer:";
/// The longest question and answer kept, in characters (an answer's JSON stays under the
/// default 64 KiB body even written all in `\uXXXX` escapes).
pub const MAX_QUESTION_CHARS: usize = 500;
pub const MAX_ANSWER_CHARS: usize = 4000;

/// Whether a page URL is a curated answer's.
pub fn is_curated(url: &str) -> bool {
    url.starts_with(SCHEME)
}

/// One curated answer as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CuratedAnswer {
    /// `ans_…`
    pub id: String,
    pub question: String,
    pub answer: String,
    /// What answers cite it as: `answer:<id>`.
    pub url: String,
}

/// Why a curated answer cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error("curated answer {0} not found")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] crate::ports::Error),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// The bot's curated answers, in id order.
pub fn list(store: &dyn ContentStore, bot: &BotId) -> crate::ports::Result<Vec<CuratedAnswer>> {
    let mut pages: Vec<Page> = store
        .pages(bot)?
        .into_iter()
        .filter(|p| is_curated(&p.url))
        .collect();
    pages.sort_by(|a, b| a.url.cmp(&b.url));
    let ids: Vec<u64> = pages.iter().flat_map(|p| p.chunk_ids.clone()).collect();
    let chunks = store.chunks(&ids)?;
    Ok(pages
        .into_iter()
        .map(|page| {
            let answer = chunks
                .iter()
                .filter(|c| c.url == page.url)
                .map(|c| c.text.as_str())
                .collect::<Vec<_>>()
                .join("\n");
            CuratedAnswer {
                id: page.url[SCHEME.len()..].to_string(),
                question: page.title,
                answer,
                url: page.url,
            }
        })
        .collect())
}

/// Writes a curated answer (a new one when `id` is `None`, else replacing that one): its
/// chunk embedded, staged and committed with the bot's counts in one transaction.
pub async fn put(
    store: Arc<dyn ContentStore>,
    embedders: Arc<Embedders>,
    bot: &BotId,
    id: Option<String>,
    question: String,
    answer: String,
) -> Result<CuratedAnswer, AnswerError> {
    let record = read(&store, bot).await?;
    let bot_record = record.0.clone();
    let embedding = tokio::task::spawn_blocking(move || embedders.for_bot(Some(&bot_record)))
        .await
        .map_err(anyhow::Error::from)??;
    let embedder_id = current_embedder(&embedding).await?;
    record
        .0
        .check_embedder(&embedder_id, &minilm_id())
        .map_err(anyhow::Error::from)?;
    if let Some(id) = &id
        && find(&record.1, id).is_none()
    {
        return Err(AnswerError::NotFound(id.clone()));
    }
    let id = id.unwrap_or_else(crate::ids::answer);
    let url = format!("{SCHEME}{id}");
    let hash = {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(format!("{question}\n{answer}").as_bytes()))
    };
    let page = Page {
        url: url.clone(),
        title: question.clone(),
        content_hash: hash.clone(),
        body_hash: hash,
        etag: None,
        last_modified: None,
        links: Vec::new(),
        chunk_ids: Vec::new(),
        crawled: Some(crate::telemetry::unix_now()),
        source: None,
    };
    let chunk = Chunk {
        bot: bot.clone(),
        url: url.clone(),
        title: question.clone(),
        heading_path: Vec::new(),
        text: answer.clone(),
    };
    let ingest = crate::ids::ingest("ans");
    let staged = stage_batch(
        &store,
        embedding.embedder.clone(),
        &ingest,
        vec![(page, vec![chunk])],
    )
    .await;
    let result = match staged {
        Ok((pages, _)) => {
            // The commit counts the bot's pages and chunks.
            let (mut bot, _) = record;
            bot.embedder = Some(embedder_id);
            commit(&store, &ingest, bot, pages, Vec::new()).await
        }
        Err(e) => Err(e),
    };
    discard_if_failed(&store, &ingest, &result).await;
    result?;
    Ok(CuratedAnswer {
        id,
        question,
        answer,
        url,
    })
}

/// Removes a curated answer with its chunk; false when the bot has no such answer.
pub async fn remove(
    store: Arc<dyn ContentStore>,
    bot: &BotId,
    id: &str,
) -> Result<bool, AnswerError> {
    Ok(super::pages::remove(store, bot, &format!("{SCHEME}{id}")).await?)
}

fn find<'a>(pages: &'a [Page], id: &str) -> Option<&'a Page> {
    let url = format!("{SCHEME}{id}");
    pages.iter().find(|p| p.url == url)
}

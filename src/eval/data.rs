//! Evaluation data sets as files lay them out: BEIR folders (`corpus.jsonl`,
//! `queries.jsonl`, `qrels/test.tsv`), SQuAD v2 JSON, and nq_conflicts' `answers.jsonl`.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

use super::metrics::Qrels;
use crate::ingest::Document;

/// The URL prefix that marks a page as an evaluation document.
const DOC_PREFIX: &str = "doc:";

/// A BEIR retrieval set.
pub struct Beir {
    /// (id, title, text)
    pub corpus: Vec<(String, String, String)>,
    /// (id, text)
    pub queries: Vec<(String, String)>,
    /// Relevance grades by query id.
    pub qrels: HashMap<String, Qrels>,
}

impl Beir {
    /// The corpus as documents to ingest, one page per passage.
    pub fn documents(&self) -> Vec<Document> {
        self.corpus
            .iter()
            .map(|(id, title, text)| Document {
                url: format!("{DOC_PREFIX}{id}"),
                title: title.clone(),
                text: text.clone(),
            })
            .collect()
    }
}

/// The corpus id behind an evaluation page's URL.
pub fn document_id(url: &str) -> &str {
    url.strip_prefix(DOC_PREFIX).unwrap_or(url)
}

#[derive(Deserialize)]
struct CorpusLine {
    #[serde(rename = "_id")]
    id: String,
    #[serde(default)]
    title: String,
    text: String,
}

#[derive(Deserialize)]
struct QueryLine {
    #[serde(rename = "_id")]
    id: String,
    text: String,
}

pub fn load_beir(dir: &Path) -> anyhow::Result<Beir> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).with_context(|| {
            format!(
                "failed to read {} (a BEIR folder has corpus.jsonl, queries.jsonl and qrels/test.tsv)",
                path.display()
            )
        })
    };
    let corpus = jsonl::<CorpusLine>(&read("corpus.jsonl")?, "corpus.jsonl")?
        .into_iter()
        .map(|c| (c.id, c.title, c.text))
        .collect();
    let queries = jsonl::<QueryLine>(&read("queries.jsonl")?, "queries.jsonl")?
        .into_iter()
        .map(|q| (q.id, q.text))
        .collect();
    let mut qrels: HashMap<String, Qrels> = HashMap::new();
    for (n, line) in read("qrels/test.tsv")?.lines().enumerate() {
        let fields: Vec<&str> = line.split('\t').map(str::trim).collect();
        if fields.len() < 3 || (n == 0 && fields[2].parse::<u32>().is_err()) {
            continue;
        }
        let grade: u32 = fields[2]
            .parse()
            .with_context(|| format!("qrels/test.tsv line {}: bad score {:?}", n + 1, fields[2]))?;
        qrels
            .entry(fields[0].to_string())
            .or_default()
            .insert(fields[1].to_string(), grade);
    }
    Ok(Beir {
        corpus,
        queries,
        qrels,
    })
}

fn jsonl<T: serde::de::DeserializeOwned>(text: &str, name: &str) -> anyhow::Result<Vec<T>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| serde_json::from_str(l).with_context(|| format!("{name} line {}", n + 1)))
        .collect()
}

/// One SQuAD v2 question.
#[derive(Debug, Clone)]
pub struct SquadQuestion {
    pub id: String,
    pub question: String,
    /// Gold answers (empty when impossible).
    pub answers: Vec<String>,
    pub impossible: bool,
}

pub struct Squad {
    /// (page URL, paragraph)
    pub paragraphs: Vec<(String, String)>,
    pub questions: Vec<SquadQuestion>,
}

impl Squad {
    /// Every paragraph as a document: one bot holds them all, as a site would.
    pub fn documents(&self) -> Vec<Document> {
        self.paragraphs
            .iter()
            .map(|(url, text)| Document {
                url: url.clone(),
                title: String::new(),
                text: text.clone(),
            })
            .collect()
    }
}

#[derive(Deserialize)]
struct SquadFile {
    data: Vec<SquadArticle>,
}

#[derive(Deserialize)]
struct SquadArticle {
    paragraphs: Vec<SquadParagraph>,
}

#[derive(Deserialize)]
struct SquadParagraph {
    context: String,
    qas: Vec<SquadQa>,
}

#[derive(Deserialize)]
struct SquadQa {
    id: String,
    question: String,
    #[serde(default)]
    is_impossible: bool,
    #[serde(default)]
    answers: Vec<SquadAnswer>,
}

#[derive(Deserialize)]
struct SquadAnswer {
    text: String,
}

pub fn load_squad(path: &Path) -> anyhow::Result<Squad> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read {}", path.display()))?;
    let file: SquadFile = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a SQuAD v2 file", path.display()))?;
    let mut paragraphs = Vec::new();
    let mut questions = Vec::new();
    for (a, article) in file.data.into_iter().enumerate() {
        for (p, paragraph) in article.paragraphs.into_iter().enumerate() {
            paragraphs.push((format!("{DOC_PREFIX}squad-{a}-{p}"), paragraph.context));
            for qa in paragraph.qas {
                let mut answers: Vec<String> = qa.answers.into_iter().map(|a| a.text).collect();
                answers.dedup();
                questions.push(SquadQuestion {
                    id: qa.id,
                    question: qa.question,
                    impossible: qa.is_impossible || answers.is_empty(),
                    answers,
                });
            }
        }
    }
    Ok(Squad {
        paragraphs,
        questions,
    })
}

/// nq_conflicts: the answer a question's passage states and the real-world one.
#[derive(Debug, Clone)]
pub struct ConflictAnswer {
    pub in_context: String,
    pub real_world: String,
}

#[derive(Deserialize)]
struct ConflictLine {
    qid: String,
    answer_in_context: String,
    real_world_answer: String,
}

pub fn load_conflict_answers(path: &Path) -> anyhow::Result<HashMap<String, ConflictAnswer>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read {}", path.display()))?;
    Ok(jsonl::<ConflictLine>(&text, "answers.jsonl")?
        .into_iter()
        .map(|l| {
            (
                l.qid,
                ConflictAnswer {
                    in_context: l.answer_in_context,
                    real_world: l.real_world_answer,
                },
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_beir_folder_loads_with_its_header_skipped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("qrels")).unwrap();
        std::fs::write(
            dir.path().join("corpus.jsonl"),
            "{\"_id\": \"d1\", \"title\": \"Kettles\", \"text\": \"Kettles boil water.\"}\n\n{\"_id\": \"d2\", \"text\": \"Owls hoot.\"}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("queries.jsonl"),
            "{\"_id\": \"q1\", \"text\": \"what boils water\"}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("qrels/test.tsv"),
            "query-id\tcorpus-id\tscore\nq1\td1\t1\n",
        )
        .unwrap();
        let set = load_beir(dir.path()).unwrap();
        assert_eq!(set.corpus.len(), 2);
        assert_eq!(set.qrels["q1"]["d1"], 1);
        let docs = set.documents();
        assert_eq!(document_id(&docs[1].url), "d2");
        assert_eq!(docs[1].title, "");
    }
}

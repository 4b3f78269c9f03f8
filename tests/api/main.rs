//! The one integration test binary: crawler, embedder, index, end-to-end and crash tests.

mod helpers;

mod answer;
mod answers;
mod architecture;
mod balanced;

mod cli;
mod cluster;
mod console;
mod crash;
mod crawl;
mod documents;
mod embedder;
mod embedders;
mod end_to_end;
mod eval;
mod events;
mod feedback;
mod golden;
mod hardening;
mod index_recall;
mod nomic;
mod pg;
mod remote;
mod remote_embed;
mod server;
mod sources;
mod uploads;
mod widget;

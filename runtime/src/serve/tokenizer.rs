//! Text to token ids and back: a Hugging Face `tokenizer.json` (through the `tokenizers`
//! crate, special tokens added as the file's post-processor says, like `transformers`'
//! default), or bytes as tokens for zoo models, which have no tokenizer of their own.
//! [`StreamDecoder`] turns generated ids into text as they come, holding back a token that
//! ends inside a multi-byte character until the character is complete.

use super::ServeError;
use std::path::Path;

/// A tokenizer; see the module doc.
pub enum TextTokenizer {
    Hf(Box<tokenizers::Tokenizer>),
    /// Token `b` is byte `b` (ids 0..256).
    Bytes,
}

impl TextTokenizer {
    pub fn from_file(path: &Path) -> Result<TextTokenizer, ServeError> {
        let tokenizer = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| ServeError::Tokenizer(format!("{}: {e}", path.display())))?;
        Ok(TextTokenizer::Hf(Box::new(tokenizer)))
    }

    /// The number of ids the tokenizer produces (256 for bytes).
    pub fn vocab_size(&self) -> usize {
        match self {
            TextTokenizer::Hf(t) => t.get_vocab_size(true),
            TextTokenizer::Bytes => 256,
        }
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ServeError> {
        match self {
            TextTokenizer::Hf(t) => {
                let encoding = t.encode(text, true).map_err(|e| ServeError::Tokenizer(e.to_string()))?;
                Ok(encoding.get_ids().to_vec())
            }
            TextTokenizer::Bytes => Ok(text.bytes().map(u32::from).collect()),
        }
    }

    /// The text of `ids` (special tokens skipped); bytes that are not UTF-8 become U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> Result<String, ServeError> {
        match self {
            TextTokenizer::Hf(t) => t.decode(ids, true).map_err(|e| ServeError::Tokenizer(e.to_string())),
            TextTokenizer::Bytes => {
                let bytes: Vec<u8> = ids.iter().map(|&id| u8::try_from(id).unwrap_or(b'?')).collect();
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            }
        }
    }
}

/// Incremental detokenization of one sequence's generated ids, in O(1) amortized work per
/// token (the prefix/read-offset algorithm of vLLM and TGI): only a window of the last ids is
/// decoded, never the whole sequence. `ids[prefix..read]` were already emitted and are decoded
/// again only as context, because a tokenizer's decoder may render a token differently at the
/// start of a text than after another token (a SentencePiece word's leading space); the text
/// of `ids[prefix..]` beyond the text of `ids[prefix..read]` is new. It is held back while it
/// ends in U+FFFD (a token that ends inside a multi-byte character whose rest comes later).
#[derive(Default)]
pub struct StreamDecoder {
    ids: Vec<u32>,
    /// Start of the context window: ids before it are never decoded again.
    prefix: usize,
    /// Ids before this are emitted.
    read: usize,
}

/// A held-back tail grows the window while it stays incomplete; past this many ids (no
/// character takes that many tokens) it is emitted as it decodes, replacement characters and all.
const MAX_HELD_IDS: usize = 16;

impl StreamDecoder {
    /// Adds `id`; returns the text that became final (possibly empty).
    pub fn push(&mut self, tokenizer: &TextTokenizer, id: u32) -> Result<String, ServeError> {
        self.ids.push(id);
        let before = tokenizer.decode(&self.ids[self.prefix..self.read])?;
        let text = tokenizer.decode(&self.ids[self.prefix..])?;
        let held = self.ids.len() - self.read;
        let complete = !text.ends_with('\u{FFFD}') || held >= MAX_HELD_IDS;
        match text.get(before.len()..) {
            Some(new) if complete && text.len() > before.len() && text.starts_with(before.as_str()) => {
                let new = new.to_string();
                self.prefix = self.read;
                self.read = self.ids.len();
                Ok(new)
            }
            _ => Ok(String::new()),
        }
    }

    /// Whatever is still held back (an incomplete character at the end).
    pub fn finish(&mut self, tokenizer: &TextTokenizer) -> Result<String, ServeError> {
        let before = tokenizer.decode(&self.ids[self.prefix..self.read])?;
        let text = tokenizer.decode(&self.ids[self.prefix..])?;
        let rest = text.get(before.len()..).filter(|_| text.starts_with(before.as_str())).unwrap_or_default();
        let rest = rest.to_string();
        self.prefix = self.read;
        self.read = self.ids.len();
        Ok(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_and_stream_whole_characters() {
        let t = TextTokenizer::Bytes;
        let ids = t.encode("né").unwrap();
        assert_eq!(ids, vec![110, 195, 169]);
        let mut stream = StreamDecoder::default();
        let pieces: Vec<String> = ids.iter().map(|&id| stream.push(&t, id).unwrap()).collect();
        assert_eq!(pieces, vec!["n", "", "é"]);
        assert_eq!(stream.finish(&t).unwrap(), "");
    }

    /// Streaming a long sequence gives the text of decoding it whole, and each push decodes a
    /// window of a few ids, not the sequence so far.
    #[test]
    fn streamed_text_equals_the_whole_decode_with_a_bounded_window() {
        let t = TextTokenizer::Bytes;
        let text = "aé€😀b".repeat(200);
        let ids = t.encode(&text).unwrap();
        let mut stream = StreamDecoder::default();
        let mut streamed = String::new();
        for &id in &ids {
            streamed.push_str(&stream.push(&t, id).unwrap());
            assert!(stream.ids.len() - stream.prefix <= 8, "window of {} ids", stream.ids.len() - stream.prefix);
        }
        streamed.push_str(&stream.finish(&t).unwrap());
        assert_eq!(streamed, text);
    }

    /// An id sequence that never completes its character is emitted (lossily) once it is
    /// longer than any character, and `finish` hands out a truncated tail.
    #[test]
    fn invalid_utf8_is_emitted_lossily_not_held_forever() {
        let t = TextTokenizer::Bytes;
        let mut stream = StreamDecoder::default();
        let mut streamed = String::new();
        for _ in 0..40 {
            streamed.push_str(&stream.push(&t, 0xC3).unwrap());
        }
        streamed.push_str(&stream.finish(&t).unwrap());
        assert_eq!(streamed, "\u{FFFD}".repeat(40));
    }
}

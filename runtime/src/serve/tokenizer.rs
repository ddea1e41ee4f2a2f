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

/// Incremental detokenization of one sequence's generated ids.
#[derive(Default)]
pub struct StreamDecoder {
    ids: Vec<u32>,
    /// Bytes of the decoded text already handed out.
    emitted: usize,
}

impl StreamDecoder {
    /// Adds `id`; returns the text that became final (possibly empty).
    pub fn push(&mut self, tokenizer: &TextTokenizer, id: u32) -> Result<String, ServeError> {
        self.ids.push(id);
        let text = tokenizer.decode(&self.ids)?;
        // A trailing replacement character may be half of a character whose rest comes later.
        if text.ends_with('\u{FFFD}') || text.len() < self.emitted || !text.is_char_boundary(self.emitted) {
            return Ok(String::new());
        }
        let new = text[self.emitted..].to_string();
        self.emitted = text.len();
        Ok(new)
    }

    /// Whatever is still held back (an incomplete character at the end).
    pub fn finish(&mut self, tokenizer: &TextTokenizer) -> Result<String, ServeError> {
        let text = tokenizer.decode(&self.ids)?;
        let rest = text.get(self.emitted..).unwrap_or_default().to_string();
        self.emitted = text.len();
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
}

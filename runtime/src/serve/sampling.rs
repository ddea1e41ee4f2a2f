//! Choosing the next token from logits: greedy (the default, ties to the lowest id as
//! `torch.argmax` breaks them), or sampling at a temperature from the top-p nucleus with a
//! seeded generator, so a seed reproduces a run.

use tessera_ir::random::SplitMix64;

/// How to pick tokens; `temperature == 0` is greedy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    pub temperature: f64,
    pub top_p: f64,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> SamplingParams {
        SamplingParams { temperature: 0.0, top_p: 1.0, seed: 0 }
    }
}

/// A sampler for one sequence.
pub struct Sampler {
    params: SamplingParams,
    rng: SplitMix64,
}

/// The index of the largest logit, the first one among equals.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] {
            best = i;
        }
    }
    best as u32
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Sampler {
        Sampler { params, rng: SplitMix64::new(params.seed) }
    }

    pub fn next(&mut self, logits: &[f32]) -> u32 {
        if self.params.temperature <= 0.0 {
            return argmax(logits);
        }
        let t = self.params.temperature;
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let mut probs: Vec<(u32, f64)> =
            logits.iter().enumerate().map(|(i, &x)| (i as u32, ((x as f64 - max) / t).exp())).collect();
        let total: f64 = probs.iter().map(|p| p.1).sum();
        probs.iter_mut().for_each(|p| p.1 /= total);
        // Most likely first (ids break ties), then the smallest prefix reaching top_p.
        probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut kept = 0;
        let mut mass = 0.0;
        for p in &probs {
            kept += 1;
            mass += p.1;
            if mass >= self.params.top_p {
                break;
            }
        }
        let mut draw = self.rng.next_f64() * mass;
        for &(id, p) in &probs[..kept] {
            if draw < p {
                return id;
            }
            draw -= p;
        }
        probs[kept - 1].0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_largest_logit() {
        let mut s = Sampler::new(SamplingParams::default());
        assert_eq!(s.next(&[0.5, 2.0, 2.0, -1.0]), 1);
    }

    #[test]
    fn a_small_top_p_keeps_only_the_most_likely_token() {
        let params = SamplingParams { temperature: 1.0, top_p: 0.1, seed: 7 };
        let mut s = Sampler::new(params);
        assert!((0..50).all(|_| s.next(&[0.0, 3.0, 1.0]) == 1));
    }

    #[test]
    fn sampling_follows_the_distribution_and_the_seed() {
        let params = SamplingParams { temperature: 1.0, top_p: 1.0, seed: 3 };
        let logits = [0.0f32, (3.0f32).ln()];
        let draws: Vec<u32> = {
            let mut s = Sampler::new(params);
            (0..4000).map(|_| s.next(&logits)).collect()
        };
        let ones = draws.iter().filter(|&&t| t == 1).count() as f64 / 4000.0;
        assert!((ones - 0.75).abs() < 0.03, "{ones}");
        let mut again = Sampler::new(params);
        assert!(draws.iter().all(|&t| again.next(&logits) == t));
    }
}

//! The paged KV cache's memory: fixed-size blocks handed out from a free list, with a usage
//! count per block so that sequences may share blocks (a common prompt prefix, a forked
//! sequence) and a block returns to the free list only when its last user lets go.

/// Index of a block in the cache.
pub type BlockId = u32;

/// A free list over `n` blocks with a usage count each.
#[derive(Debug, Clone)]
pub struct BlockAllocator {
    /// Free blocks; the next allocation pops from the end (the most recently freed block, whose
    /// memory is the most likely to be in cache).
    free: Vec<BlockId>,
    /// Users per block; 0 exactly for the blocks in `free`.
    usage: Vec<u32>,
}

impl BlockAllocator {
    pub fn new(blocks: u32) -> BlockAllocator {
        BlockAllocator { free: (0..blocks).rev().collect(), usage: vec![0; blocks as usize] }
    }

    pub fn total(&self) -> usize {
        self.usage.len()
    }

    pub fn free_count(&self) -> usize {
        self.free.len()
    }

    pub fn used_count(&self) -> usize {
        self.total() - self.free_count()
    }

    /// A fresh block with one user, or `None` when every block is in use.
    pub fn allocate(&mut self) -> Option<BlockId> {
        let block = self.free.pop()?;
        self.usage[block as usize] = 1;
        Some(block)
    }

    /// One more user of an allocated block (sharing it).
    pub fn retain(&mut self, block: BlockId) {
        let count = &mut self.usage[block as usize];
        assert!(*count > 0, "retain of free block {block}");
        *count += 1;
    }

    /// One user fewer; the block is free again after its last user releases it.
    pub fn release(&mut self, block: BlockId) {
        let count = &mut self.usage[block as usize];
        assert!(*count > 0, "release of free block {block}");
        *count -= 1;
        if *count == 0 {
            self.free.push(block);
        }
    }

    /// Users of `block` (0 when free).
    pub fn usage(&self, block: BlockId) -> u32 {
        self.usage[block as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_shared_block_is_free_after_its_last_user() {
        let mut blocks = BlockAllocator::new(2);
        let a = blocks.allocate().unwrap();
        blocks.retain(a);
        blocks.release(a);
        assert_eq!((blocks.usage(a), blocks.free_count()), (1, 1));
        blocks.release(a);
        assert_eq!((blocks.usage(a), blocks.free_count()), (0, 2));
    }

    #[test]
    fn allocation_fails_when_every_block_is_used() {
        let mut blocks = BlockAllocator::new(2);
        let got = [blocks.allocate(), blocks.allocate(), blocks.allocate()];
        assert_eq!(got, [Some(0), Some(1), None]);
    }

    proptest! {
        /// Any sequence of allocations and releases keeps the counts consistent: free and used
        /// add up, no block is handed out twice, and releasing everything frees everything.
        #[test]
        fn counts_stay_consistent(ops in proptest::collection::vec(any::<bool>(), 0..64)) {
            let mut blocks = BlockAllocator::new(8);
            let mut held: Vec<BlockId> = Vec::new();
            for allocate in ops {
                if allocate {
                    if let Some(b) = blocks.allocate() {
                        prop_assert!(!held.contains(&b));
                        held.push(b);
                    } else {
                        prop_assert_eq!(held.len(), 8);
                    }
                } else if let Some(b) = held.pop() {
                    blocks.release(b);
                }
                prop_assert_eq!(blocks.used_count(), held.len());
            }
            for b in held.drain(..) {
                blocks.release(b);
            }
            prop_assert_eq!(blocks.free_count(), 8);
        }
    }
}

//! Who feeds whom: the fan-out's tree over the nodes that lack something.
//! The seed, fed by the deployer, is the node lacking the most bytes (it
//! receives least that it does not need itself); the others follow in the
//! deploy's order, each fed by a node before it, `degree` children per
//! node (breadth first), so the tree is as shallow as the degree allows.

/// The fan-out's shape: positions in [`Tree::order`], the seed first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    /// The node names, seed first.
    pub order: Vec<String>,
    /// For each position, the position of the node feeding it (`None`:
    /// the deployer, for the seed only).
    pub parent: Vec<Option<usize>>,
}

impl Tree {
    /// Plans the tree over `nodes` (name, bytes it lacks), in deploy order;
    /// nodes lacking nothing stay out. `None` when fewer than two remain:
    /// nothing to fan out.
    pub fn plan(nodes: &[(String, u64)], degree: usize) -> Option<Tree> {
        let degree = degree.max(1);
        let lacking: Vec<&(String, u64)> = nodes.iter().filter(|(_, b)| *b > 0).collect();
        if lacking.len() < 2 {
            return None;
        }
        // The first of the largest.
        let seed = lacking.iter().enumerate().fold(
            0,
            |best, (i, n)| if n.1 > lacking[best].1 { i } else { best },
        );
        let mut order = vec![lacking[seed].0.clone()];
        order.extend(
            lacking
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != seed)
                .map(|(_, n)| n.0.clone()),
        );
        let parent = (0..order.len())
            .map(|i| (i > 0).then(|| (i - 1) / degree))
            .collect();
        Some(Tree { order, parent })
    }

    /// The position of `name`.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.order.iter().position(|n| n == name)
    }

    /// Positions of the nodes fed by `i`.
    pub fn children(&self, i: usize) -> Vec<usize> {
        (0..self.order.len())
            .filter(|&c| self.parent[c] == Some(i))
            .collect()
    }

    /// `i` and every node fed through it, directly or not.
    pub fn subtree(&self, i: usize) -> Vec<usize> {
        let mut out = vec![i];
        let mut next = 0;
        while next < out.len() {
            out.extend(self.children(out[next]));
            next += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(spec: &[(&str, u64)]) -> Vec<(String, u64)> {
        spec.iter().map(|(n, b)| (n.to_string(), *b)).collect()
    }

    #[test]
    fn the_node_lacking_most_seeds_and_the_rest_hang_below_it_breadth_first() {
        let t = Tree::plan(
            &nodes(&[("a", 5), ("b", 9), ("c", 9), ("d", 0), ("e", 1), ("f", 2)]),
            2,
        )
        .unwrap();
        assert_eq!(t.order, ["b", "a", "c", "e", "f"]);
        assert_eq!(t.parent, [None, Some(0), Some(0), Some(1), Some(1)]);
        assert_eq!(t.children(1), [3, 4]);
        assert_eq!(t.subtree(1), [1, 3, 4]);
        assert_eq!(t.subtree(0), [0, 1, 2, 3, 4]);
        assert_eq!(t.position("d"), None);
    }

    #[test]
    fn a_wide_degree_is_a_star_and_one_lacking_node_is_no_fan_out() {
        let t = Tree::plan(&nodes(&[("a", 1), ("b", 1), ("c", 1)]), 8).unwrap();
        assert_eq!(t.parent, [None, Some(0), Some(0)]);
        assert_eq!(Tree::plan(&nodes(&[("a", 1), ("b", 0)]), 4), None);
        assert_eq!(Tree::plan(&nodes(&[]), 4), None);
    }
}

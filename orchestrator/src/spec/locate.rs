//! A small YAML scanner that maps a field path such as `clusters[0].threshold` to its line in
//! the source, for errors that `serde_yaml` cannot locate (semantic ones).

/// One segment of a field path.
#[derive(Debug, PartialEq)]
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

fn parse_path(path: &str) -> Option<Vec<Seg<'_>>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Seg::Key(key));
        }
        while let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            out.push(Seg::Index(r[..end].parse().ok()?));
            rest = &r[end + 1..];
        }
    }
    Some(out)
}

/// A region of the source holding one YAML node.
#[derive(Debug, Clone, Copy)]
enum Region {
    /// Block node: byte range and the column its keys / `-` items start at.
    Block {
        start: usize,
        end: usize,
        col: usize,
    },
    /// Inside of a flow collection (between its brackets).
    Flow { start: usize, end: usize },
}

/// Finds the 1-based line of a field path (`clusters[0].threshold`) in YAML text.
///
/// Handles the block and flow styles a devnet file uses; when a segment is not found the
/// line of the deepest enclosing node found is returned.
pub fn locate(text: &str, path: &str) -> Option<usize> {
    let segs = parse_path(path)?;
    let line_of = |pos: usize| text[..pos].matches('\n').count() + 1;
    let mut region = Region::Block {
        start: 0,
        end: text.len(),
        col: 0,
    };
    let mut best: Option<usize> = None;
    for seg in segs {
        let found = match seg {
            Seg::Key(k) => find_key(text, region, k),
            Seg::Index(i) => find_item(text, region, i),
        };
        match found {
            Some((pos, next)) => {
                best = Some(line_of(pos));
                region = next;
            }
            None => return best,
        }
    }
    best
}

fn column(text: &str, pos: usize) -> usize {
    pos - text[..pos].rfind('\n').map_or(0, |i| i + 1)
}

/// Splits a flow region into top-level entries (start offset, end offset).
fn flow_entries(text: &str, start: usize, end: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut entry_start = start;
    for (i, b, depth) in unquoted(text, start, end) {
        if b == b',' && depth == 0 {
            out.push((entry_start, i));
            entry_start = i + 1;
        }
    }
    if text[entry_start..end].trim().is_empty() {
        if out.is_empty() {
            return out;
        }
    } else {
        out.push((entry_start, end));
    }
    out
}

/// Skips whitespace from `pos`, returning the first non-space offset (bounded by `end`).
fn skip_ws(text: &str, mut pos: usize, end: usize) -> usize {
    let b = text.as_bytes();
    while pos < end && (b[pos] as char).is_whitespace() {
        pos += 1;
    }
    pos
}

/// Offset of the bracket matching the one at `open`.
fn matching_bracket(text: &str, open: usize) -> Option<usize> {
    unquoted(text, open, text.len())
        .find(|&(_, b, depth)| matches!(b, b'}' | b']') && depth == 0)
        .map(|(i, ..)| i)
}

/// The bytes of `text[start..end]` outside quotes, each with the flow bracket depth after it
/// (what the flow scanners above look at).
fn unquoted(text: &str, start: usize, end: usize) -> impl Iterator<Item = (usize, u8, i32)> + '_ {
    let mut depth = 0i32;
    let mut quote: Option<u8> = None;
    text.as_bytes()[..end]
        .iter()
        .enumerate()
        .skip(start)
        .filter_map(move |(i, &b)| {
            if let Some(q) = quote {
                if b == q {
                    quote = None;
                }
                return None;
            }
            match b {
                b'"' | b'\'' => quote = Some(b),
                b'{' | b'[' => depth += 1,
                b'}' | b']' => depth -= 1,
                _ => {}
            }
            Some((i, b, depth))
        })
}

/// Region of the value that starts at `pos` (just after `:` or `- `); `owner_col` is the
/// column of the key or dash owning it, `limit` the end of the enclosing region.
fn value_region(text: &str, pos: usize, owner_col: usize, limit: usize) -> Region {
    let line_end = text[pos..limit].find('\n').map_or(limit, |i| pos + i);
    let first = skip_ws(text, pos, line_end);
    if first < line_end {
        let c = text.as_bytes()[first];
        if c == b'{' || c == b'[' {
            let close = matching_bracket(text, first).unwrap_or(limit).min(limit);
            return Region::Flow {
                start: first + 1,
                end: close,
            };
        }
        if c != b'#' {
            // Scalar, or (after `- `) an inline block mapping continuing below.
            let end = block_end(text, line_end, owner_col, limit);
            return Region::Block {
                start: first,
                end,
                col: column(text, first),
            };
        }
    }
    // Value on the following lines.
    let end = block_end(text, line_end, owner_col, limit);
    let start = (line_end + 1).min(end);
    let content = text[start..end]
        .lines()
        .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map_or(owner_col + 2, |l| l.len() - l.trim_start().len());
    Region::Block {
        start,
        end,
        col: content,
    }
}

/// End of a block node whose owner sits at `owner_col`: the first later line indented at
/// most `owner_col` (a `-` at exactly `owner_col` continues a sequence under a key).
fn block_end(text: &str, from: usize, owner_col: usize, limit: usize) -> usize {
    let mut pos = from;
    while pos < limit {
        let line_start = pos + 1;
        if line_start >= limit {
            return limit;
        }
        let line_end = text[line_start..limit]
            .find('\n')
            .map_or(limit, |i| line_start + i);
        let line = &text[line_start..line_end];
        let trimmed = line.trim_start();
        if !trimmed.is_empty() && !trimmed.starts_with('#') {
            let indent = line.len() - trimmed.len();
            if indent < owner_col
                || (indent == owner_col && !(trimmed.starts_with("- ") || trimmed == "-"))
            {
                return pos;
            }
        }
        pos = line_end;
    }
    limit
}

fn find_key(text: &str, region: Region, key: &str) -> Option<(usize, Region)> {
    match region {
        Region::Flow { start, end } => {
            for (a, b) in flow_entries(text, start, end) {
                let s = skip_ws(text, a, b);
                let entry = &text[s..b];
                if let Some(rest) = entry.strip_prefix(key) {
                    let r = rest.trim_start();
                    if r.starts_with(':') {
                        let colon = b - r.len();
                        return Some((s, value_region(text, colon + 1, column(text, s), b)));
                    }
                }
            }
            None
        }
        Region::Block { start, end, col } => {
            let mut pos = start;
            while pos < end {
                let line_end = text[pos..end].find('\n').map_or(end, |i| pos + i);
                let c = column(text, pos);
                // Position of the key candidate on this line at column `col`.
                let cand = if c <= col && pos + (col - c) <= line_end {
                    Some(pos + (col - c))
                } else {
                    None
                };
                if let Some(k) = cand {
                    let rest = &text[k..line_end];
                    if let Some(after) = rest.strip_prefix(key) {
                        let t = after.trim_start();
                        if t.starts_with(':') && text[pos..k].trim().is_empty() {
                            let colon = line_end - t.len();
                            return Some((k, value_region(text, colon + 1, col, end)));
                        }
                    }
                }
                pos = line_end + 1;
            }
            None
        }
    }
}

fn find_item(text: &str, region: Region, index: usize) -> Option<(usize, Region)> {
    match region {
        Region::Flow { start, end } => {
            let (a, b) = *flow_entries(text, start, end).get(index)?;
            let s = skip_ws(text, a, b);
            let c = text.as_bytes().get(s)?;
            let r = if *c == b'{' || *c == b'[' {
                Region::Flow {
                    start: s + 1,
                    end: matching_bracket(text, s).unwrap_or(b),
                }
            } else {
                Region::Flow { start: s, end: b }
            };
            Some((s, r))
        }
        Region::Block { start, end, col } => {
            let mut pos = start;
            let mut seen = 0;
            while pos < end {
                let line_end = text[pos..end].find('\n').map_or(end, |i| pos + i);
                let c = column(text, pos);
                if c <= col {
                    let dash = pos + (col - c);
                    if dash < line_end
                        && text[pos..dash].trim().is_empty()
                        && text[dash..].starts_with('-')
                    {
                        if seen == index {
                            return Some((dash, value_region(text, dash + 1, col, end)));
                        }
                        seen += 1;
                    }
                }
                pos = line_end + 1;
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASIC: &str = include_str!("../../../devnets/basic.yaml");

    #[test]
    fn locate_paths() {
        assert_eq!(locate(BASIC, "clusters[0].beacon_nodes[2]"), Some(8));
        assert_eq!(locate(BASIC, "beacon_nodes[1].client"), Some(3));
        assert_eq!(locate(BASIC, "seed"), Some(BASIC.lines().count()));
    }
}

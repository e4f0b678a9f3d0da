//! LCS: the longest common subsequence of two strings, as Redis computes it.

use super::parse::LcsAnswer;
use super::Reply;

/// The table is (len a + 1) x (len b + 1) lengths; above this many cells the
/// command is refused rather than allocating without bound.
const MAX_CELLS: usize = 16 * 1024 * 1024;

/// The classic dynamic-programming table, walked back from the end to give
/// the subsequence and, for IDX, the matching ranges (last first, as Redis
/// lists them).
pub fn longest_common_subsequence(
    a: &[u8],
    b: &[u8],
    answer: LcsAnswer,
    min_match_len: u64,
    with_match_len: bool,
) -> Reply {
    let width = b.len() + 1;
    let cells = (a.len() + 1).saturating_mul(width);
    if cells > MAX_CELLS {
        return Reply::Error(format!(
            "ERR LCS of strings this long needs a table of {cells} cells; the limit is {MAX_CELLS}"
        ));
    }
    let mut table = vec![0u32; cells];
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            table[i * width + j] = if a[i - 1] == b[j - 1] {
                table[(i - 1) * width + j - 1] + 1
            } else {
                table[(i - 1) * width + j].max(table[i * width + j - 1])
            };
        }
    }
    let length = table[cells - 1] as usize;
    if answer == LcsAnswer::Len {
        return Reply::Int(length as i64);
    }

    let mut common = vec![0u8; length];
    let mut next = length;
    let mut matches = Vec::new();
    // The range being grown backwards: (a start, a end, b start, b end).
    let mut range: Option<(usize, usize, usize, usize)> = None;
    let (mut i, mut j) = (a.len(), b.len());
    while i > 0 && j > 0 {
        let emit = if a[i - 1] == b[j - 1] {
            next -= 1;
            common[next] = a[i - 1];
            range = Some(match range {
                Some((a_start, a_end, b_start, b_end)) if a_start == i && b_start == j => {
                    (a_start - 1, a_end, b_start - 1, b_end)
                }
                _ => (i - 1, i - 1, j - 1, j - 1),
            });
            // A match at the first byte of either string ends the walk.
            let at_start = i == 1 || j == 1;
            i -= 1;
            j -= 1;
            at_start
        } else {
            if table[(i - 1) * width + j] > table[i * width + j - 1] {
                i -= 1;
            } else {
                j -= 1;
            }
            range.is_some()
        };
        if let (true, Some((a_start, a_end, b_start, b_end))) = (emit, range) {
            let len = (a_end - a_start + 1) as u64;
            if len >= min_match_len {
                let span = |start: usize, end: usize| {
                    Reply::Array(vec![Reply::Int(start as i64), Reply::Int(end as i64)])
                };
                let mut found = vec![span(a_start, a_end), span(b_start, b_end)];
                if with_match_len {
                    found.push(Reply::Int(len as i64));
                }
                matches.push(Reply::Array(found));
            }
            range = None;
        }
    }
    match answer {
        LcsAnswer::Indexes => Reply::Map(vec![
            (Reply::bulk("matches"), Reply::Array(matches)),
            (Reply::bulk("len"), Reply::Int(length as i64)),
        ]),
        _ => Reply::bulk(common),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lcs_answers_as_redis_documents() {
        let (a, b) = (b"ohmytext".as_slice(), b"mynewtext".as_slice());
        assert_eq!(
            longest_common_subsequence(a, b, LcsAnswer::String, 0, false),
            Reply::bulk("mytext")
        );
        assert_eq!(
            longest_common_subsequence(a, b, LcsAnswer::Len, 0, false),
            Reply::Int(6)
        );
        let span = |x: i64, y: i64| Reply::Array(vec![Reply::Int(x), Reply::Int(y)]);
        assert_eq!(
            longest_common_subsequence(a, b, LcsAnswer::Indexes, 0, true),
            Reply::Map(vec![
                (
                    Reply::bulk("matches"),
                    Reply::Array(vec![
                        Reply::Array(vec![span(4, 7), span(5, 8), Reply::Int(4)]),
                        Reply::Array(vec![span(2, 3), span(0, 1), Reply::Int(2)]),
                    ])
                ),
                (Reply::bulk("len"), Reply::Int(6)),
            ])
        );
    }

    #[test]
    fn empty_strings_have_an_empty_lcs() {
        assert_eq!(
            longest_common_subsequence(b"", b"abc", LcsAnswer::String, 0, false),
            Reply::bulk("")
        );
    }
}

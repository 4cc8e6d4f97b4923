//! Frames of the Redis protocol (RESP2 and RESP3), counted as they stream through the proxy,
//! so a test can wait until commands were sent or answered instead of sleeping.

/// Follows one direction of a connection, a chunk at a time, and reports every whole
/// top-level frame: a command from a client, a reply from a server.
#[derive(Debug, Default)]
pub(crate) struct Frames {
    /// The header line read so far (a chunk may end inside one).
    line: Vec<u8>,
    /// Bytes of the current bulk string still to skip, its closing CRLF included.
    bulk_left: usize,
    /// Elements still to come in each open aggregate, outermost first.
    open: Vec<usize>,
    /// The kind of the top-level frame being read.
    top: Top,
    /// Set by a top-level array's header: its first element is a command's name.
    want_name: bool,
    /// Set while that first element, a bulk string, is read into `name`.
    capturing: bool,
    /// The current top-level frame's command name.
    name: Vec<u8>,
}

/// What a whole top-level frame was.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    /// An array (a command: its name, upper-cased) or any other reply.
    Message(String),
    /// A RESP3 push (`>`): out of band, not the answer to a command.
    Push,
    /// A RESP3 attribute (`|`): it comes before the reply it describes.
    Attribute,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Top {
    #[default]
    Other,
    Array,
    Push,
    Attribute,
}

/// Longest command name kept; longer ones are cut (no real command comes near).
const NAME_MAX: usize = 32;

impl Frames {
    /// Reads `chunk` and returns the frames it completed, in order.
    pub(crate) fn feed(&mut self, mut chunk: &[u8]) -> Vec<Frame> {
        let mut done = Vec::new();
        while !chunk.is_empty() {
            if self.bulk_left > 0 {
                let n = self.bulk_left.min(chunk.len());
                if self.capturing {
                    // The payload without its CRLF, up to the cap.
                    let payload = self.bulk_left.saturating_sub(2);
                    let room = NAME_MAX.saturating_sub(self.name.len());
                    self.name
                        .extend_from_slice(&chunk[..n.min(payload).min(room)]);
                }
                self.bulk_left -= n;
                chunk = &chunk[n..];
                if self.bulk_left == 0 {
                    self.capturing = false;
                    self.element(&mut done);
                }
                continue;
            }
            let Some(end) = chunk.iter().position(|&b| b == b'\n') else {
                self.line.extend_from_slice(chunk);
                return done;
            };
            self.line.extend_from_slice(&chunk[..end]);
            chunk = &chunk[end + 1..];
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            self.header(&line, &mut done);
        }
        done
    }

    fn header(&mut self, line: &[u8], done: &mut Vec<Frame>) {
        let Some((&kind, rest)) = line.split_first() else {
            // An empty line between inline commands: nothing.
            return;
        };
        let count = || {
            std::str::from_utf8(rest)
                .ok()
                .and_then(|n| n.trim().parse::<i64>().ok())
                .unwrap_or(-1)
        };
        let at_top = self.open.is_empty();
        let first_argument = std::mem::take(&mut self.want_name) && self.open.len() == 1;
        match kind {
            b'$' | b'!' | b'=' => match usize::try_from(count()) {
                Ok(len) => {
                    self.capturing = first_argument;
                    self.bulk_left = len + 2;
                }
                // `$-1`: a null, whole already.
                Err(_) => self.element(done),
            },
            b'*' | b'~' | b'>' | b'%' | b'|' => {
                if at_top {
                    self.top = match kind {
                        b'*' => Top::Array,
                        b'>' => Top::Push,
                        b'|' => Top::Attribute,
                        _ => Top::Other,
                    };
                }
                let pairs = matches!(kind, b'%' | b'|');
                match usize::try_from(count()) {
                    Ok(n) if n > 0 => {
                        self.want_name = at_top && kind == b'*';
                        self.open.push(if pairs { n * 2 } else { n });
                    }
                    // Empty or null: whole already.
                    _ => self.element(done),
                }
            }
            b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => {
                if at_top {
                    self.top = Top::Other;
                }
                self.element(done);
            }
            _ if at_top => {
                // An inline command (`PING\r\n`), as `redis-cli` may send.
                let name = line.split(|&b| b == b' ').next().unwrap_or_default();
                done.push(Frame::Message(upper(name)));
            }
            // Not RESP: nothing to count.
            _ => {}
        }
    }

    /// One element ended: close every aggregate it completes, and report a whole frame.
    fn element(&mut self, done: &mut Vec<Frame>) {
        loop {
            let Some(left) = self.open.last_mut() else {
                let frame = match self.top {
                    Top::Push => Frame::Push,
                    Top::Attribute => Frame::Attribute,
                    Top::Array | Top::Other => Frame::Message(upper(&self.name)),
                };
                self.top = Top::Other;
                self.name.clear();
                done.push(frame);
                return;
            };
            *left -= 1;
            if *left > 0 {
                return;
            }
            self.open.pop();
        }
    }
}

fn upper(name: &[u8]) -> String {
    String::from_utf8_lossy(name).to_ascii_uppercase()
}

#[cfg(test)]
mod tests {
    use super::{Frame, Frames};

    fn message(name: &str) -> Frame {
        Frame::Message(name.to_owned())
    }

    /// `input` fed whole, and cut at every byte, gives the same frames.
    fn frames(input: &[u8]) -> Vec<Frame> {
        let whole = Frames::default().feed(input);
        for cut in 1..input.len() {
            let mut frames = Frames::default();
            let mut split = frames.feed(&input[..cut]);
            split.extend(frames.feed(&input[cut..]));
            assert_eq!(split, whole, "cut at {cut}");
        }
        let mut bytewise = Frames::default();
        let one_by_one: Vec<Frame> = input.iter().flat_map(|b| bytewise.feed(&[*b])).collect();
        assert_eq!(one_by_one, whole, "byte by byte");
        whole
    }

    #[test]
    fn pipelined_commands_are_counted_with_their_names() {
        let input = b"*3\r\n$6\r\nclient\r\n$7\r\nSETINFO\r\n$3\r\nx\r\n\r\n\
                      *2\r\n$3\r\nGET\r\n$4\r\n$1\r\n\r\n*1\r\n$4\r\nPING\r\nPING\r\n";
        assert_eq!(
            frames(input),
            [
                message("CLIENT"),
                message("GET"),
                message("PING"),
                message("PING")
            ]
        );
    }

    #[test]
    fn every_reply_type_is_one_frame_and_pushes_and_attributes_are_told_apart() {
        let input = b"+OK\r\n-ERR no\r\n:5\r\n$-1\r\n$3\r\na\nb\r\n*-1\r\n*0\r\n\
                      *2\r\n*1\r\n:1\r\n$1\r\nx\r\n_\r\n,1.5\r\n#t\r\n(12\r\n!3\r\nerr\r\n\
                      =7\r\ntxt:abc\r\n%1\r\n+k\r\n*1\r\n:2\r\n~1\r\n:3\r\n\
                      >2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n|1\r\n+ttl\r\n:9\r\n+OK\r\n";
        let got = frames(input);
        let pushes = got.iter().filter(|f| **f == Frame::Push).count();
        let attributes = got.iter().filter(|f| **f == Frame::Attribute).count();
        let replies = got
            .iter()
            .filter(|f| matches!(f, Frame::Message(_)))
            .count();
        assert_eq!((replies, pushes, attributes), (17, 1, 1), "{got:?}");
    }
}

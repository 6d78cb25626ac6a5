use super::*;
use crate::files::Rotation;

#[derive(Default)]
struct Records(Vec<(LogStream, bool, Vec<u8>)>);

impl RecordSink for Records {
    fn record(&mut self, _: &str, stream: LogStream, partial: bool, text: &[u8]) {
        self.0.push((stream, partial, text.to_vec()));
    }
}

fn texts(r: &Records) -> Vec<(bool, String)> {
    r.0.iter()
        .map(|(_, p, t)| (*p, String::from_utf8_lossy(t).into_owned()))
        .collect()
}

#[test]
fn lines_split_across_reads_are_joined() {
    let mut sink = Records::default();
    let mut f = Framer::new(LogStream::Stdout);
    f.feed(b"one\ntw", "t", &mut sink);
    f.feed(b"o\n\nthr", "t", &mut sink);
    assert_eq!(
        texts(&sink),
        [
            (false, "one".into()),
            (false, "two".into()),
            (false, "".into())
        ]
    );
    // EOF without a newline: the rest is a partial record.
    f.finish("t", &mut sink);
    assert_eq!(texts(&sink)[3], (true, "three"[..3].into()));
    f.finish("t", &mut sink);
    assert_eq!(sink.0.len(), 4, "nothing left to write twice");
}

#[test]
fn long_lines_come_as_partial_pieces_then_a_full_record() {
    let mut sink = Records::default();
    let mut f = Framer::new(LogStream::Stderr);
    // Exactly the limit stays one full record.
    let exact = vec![b'a'; MAX_RECORD_TEXT];
    f.feed(&exact, "t", &mut sink);
    f.feed(b"\n", "t", &mut sink);
    assert_eq!(sink.0.len(), 1);
    assert!(!sink.0[0].1);
    assert_eq!(sink.0[0].2.len(), MAX_RECORD_TEXT);
    // 2.5 times the limit, written in small reads: P, P, F.
    let mut sink = Records::default();
    let long = vec![b'b'; MAX_RECORD_TEXT * 5 / 2];
    for chunk in long.chunks(1000) {
        f.feed(chunk, "t", &mut sink);
    }
    assert_eq!(sink.0.len(), 2, "pieces go out before the line ends");
    f.feed(b"\nnext\n", "t", &mut sink);
    let got: Vec<(bool, usize)> = sink.0.iter().map(|(_, p, t)| (*p, t.len())).collect();
    assert_eq!(
        got,
        [
            (true, MAX_RECORD_TEXT),
            (true, MAX_RECORD_TEXT),
            (false, MAX_RECORD_TEXT / 2),
            (false, 4)
        ]
    );
    assert!(sink.0.iter().all(|(s, _, _)| *s == LogStream::Stderr));
    // A long line in one read is cut the same way.
    let mut sink = Records::default();
    let mut one = vec![b'c'; MAX_RECORD_TEXT + 1];
    one.push(b'\n');
    f.feed(&one, "t", &mut sink);
    assert_eq!(texts(&sink).len(), 2);
    assert!(sink.0[0].1 && !sink.0[1].1);
    assert_eq!(sink.0[1].2, b"c");
}

fn write_lines(w: &mut RotatingWriter, from: usize, to: usize) {
    for i in from..to {
        w.record(
            "2026-11-27T07:43:22.123456789Z",
            LogStream::Stdout,
            false,
            format!("line {i:05}").as_bytes(),
        );
    }
    w.flush();
}

#[test]
fn files_rotate_by_size_and_the_oldest_go() {
    let dir = tempfile::tempdir().unwrap();
    // Each record is 30 + 1 + 6 + 3 + 10 + 1 = 51 bytes: four fit in 210 bytes.
    let rotation = Rotation {
        max_size: 210,
        max_files: 3,
    };
    let mut w = writer_for_test(dir.path(), rotation);
    write_lines(&mut w, 0, 4);
    assert_eq!(files::list(dir.path()).unwrap(), [1]);
    write_lines(&mut w, 4, 22);
    // 22 records, 4 per file: files 1..=6, of which the last 3 are kept.
    assert_eq!(files::list(dir.path()).unwrap(), [4, 5, 6]);
    for seq in [4, 5] {
        let len = std::fs::metadata(files::file_path(dir.path(), seq))
            .unwrap()
            .len();
        assert_eq!(len, 204, "file {seq} holds whole records only");
    }
    let last = std::fs::read_to_string(files::file_path(dir.path(), 6)).unwrap();
    assert!(last.ends_with("stdout F line 00021\n"), "{last}");
    assert_eq!(last.lines().count(), 2);
}

#[test]
fn a_new_driver_continues_the_newest_file_or_starts_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let rotation = Rotation {
        max_size: 210,
        max_files: 5,
    };
    let mut w = writer_for_test(dir.path(), rotation);
    write_lines(&mut w, 0, 6);
    drop(w);
    assert_eq!(files::list(dir.path()).unwrap(), [1, 2]);
    // A restarted container (new task, new driver) appends to file 2, which has room.
    let mut w = writer_for_test(dir.path(), rotation);
    write_lines(&mut w, 6, 7);
    drop(w);
    assert_eq!(files::list(dir.path()).unwrap(), [1, 2]);
    let second = std::fs::read_to_string(files::file_path(dir.path(), 2)).unwrap();
    assert_eq!(second.lines().count(), 3);
    // Once full, the next driver starts file 3 rather than growing file 2.
    let mut w = writer_for_test(dir.path(), rotation);
    write_lines(&mut w, 7, 8);
    let mut w = writer_for_test(dir.path(), rotation);
    write_lines(&mut w, 8, 9);
    assert_eq!(files::list(dir.path()).unwrap(), [1, 2, 3]);
}

#[test]
fn an_unwritable_directory_drops_output_without_failing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "").unwrap();
    let mut w = writer_for_test(&file.join("logs"), Rotation::default());
    write_lines(&mut w, 0, 100);
    assert!(!w.has_buffered());
    let mut discard = RotatingWriter::new(None);
    write_lines(&mut discard, 0, 10);
    assert!(!discard.has_buffered());
}

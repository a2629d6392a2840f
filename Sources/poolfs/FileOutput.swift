#if canImport(Glibc)
import Glibc
#endif

/// Unbuffered writes to a standard stream, for errors and progress.
struct FileOutput {
    let descriptor: Int32
    static let standardError = FileOutput(descriptor: 2)

    func write(_ text: String) {
        var text = text
        text.withUTF8 { bytes in
            var offset = 0
            while offset < bytes.count {
                let n = Glibc.write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
                if n <= 0 { return }
                offset += n
            }
        }
    }

    var isTerminal: Bool { isatty(descriptor) == 1 }
}

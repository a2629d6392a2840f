#if canImport(Glibc)
import Glibc
#endif

/// Unbuffered writes to a standard stream, for errors and progress.
struct FileOutput {
    let descriptor: Int32
    static let standardError = FileOutput(descriptor: 2)

    func write(_ text: String) {
        var text = text
        text.withUTF8 { write(UnsafeRawBufferPointer($0)) }
    }

    func write(_ bytes: UnsafeRawBufferPointer) {
        var offset = 0
        while offset < bytes.count {
            let n = Glibc.write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return }
            offset += n
        }
    }

    /// Everything that can be read from `descriptor` until its end.
    static func readAll(descriptor: Int32) -> [UInt8] {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = read(descriptor, &chunk, chunk.count)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return bytes }
            bytes += chunk[0..<n]
        }
    }

    var isTerminal: Bool { isatty(descriptor) == 1 }
}

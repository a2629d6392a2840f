import CUCX
#if canImport(Glibc)
import Glibc
#endif

/// Where a memory node listens: `HOST:PORT`, `[IPv6]:PORT`, resolved once.
public struct NodeAddress: CustomStringConvertible, Sendable {
    public let text: String
    private let storage: sockaddr_storage
    private let length: socklen_t

    public init(_ text: String) throws(NetError) {
        self.text = text
        let host: Substring
        let port: Substring
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { throw .invalidNodeAddress(text, reason: "expected [ADDRESS]:PORT") }
            port = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":") else { throw .invalidNodeAddress(text, reason: "expected HOST:PORT") }
            host = text[..<colon]
            port = text[text.index(after: colon)...]
        }
        guard !host.isEmpty else { throw .invalidNodeAddress(text, reason: "no host before the port") }
        guard let number = UInt16(port) else {
            throw .invalidNodeAddress(text, reason: "the port must be a number from 0 to 65535")
        }
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var found: UnsafeMutablePointer<addrinfo>?
        let code = getaddrinfo(String(host), String(number), &hints, &found)
        guard code == 0, let found, let first = found.pointee.ai_addr else {
            throw .invalidNodeAddress(text, reason: String(cString: gai_strerror(code)))
        }
        defer { freeaddrinfo(found) }
        var storage = sockaddr_storage()
        let length = found.pointee.ai_addrlen
        withUnsafeMutableBytes(of: &storage) { $0.baseAddress!.copyMemory(from: first, byteCount: Int(length)) }
        self.storage = storage
        self.length = length
    }

    public var description: String { text }

    func withSocketAddress<R>(_ body: (ucs_sock_addr_t) -> R) -> R {
        withUnsafeBytes(of: storage) { bytes in
            body(ucs_sock_addr_t(addr: bytes.baseAddress!.assumingMemoryBound(to: sockaddr.self), addrlen: length))
        }
    }
}

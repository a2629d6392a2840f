import Crypto
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// A pool's key: 32 random bytes in a file of mode 0600. A client proves it
/// holds the key by a challenge–response (HMAC-SHA256 over both sides'
/// nonces) before it learns any address, remote key or byte; the node
/// proves the same to the client. The key never crosses the wire.
public struct NodeKey: Sendable {
    public static let byteCount = 32
    let key: SymmetricKey

    init(bytes: [UInt8]) { key = SymmetricKey(data: bytes) }

    /// Writes a new random key to `path`, which must not exist yet.
    @discardableResult
    public static func create(at path: String) throws(NetError) -> NodeKey {
        let bytes = randomBytes(byteCount)
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .keyFile(path: path, reason: String(cString: strerror(errno))) }
        let file = FileDescriptor(rawValue: fd)
        do {
            defer { try? file.close() }
            _ = try file.writeAll(bytes)
            guard fsync(fd) == 0 else { throw Errno(rawValue: errno) }
        } catch {
            unlink(path)
            throw .keyFile(path: path, reason: "\(error)")
        }
        return NodeKey(bytes: bytes)
    }

    /// Reads the key at `path`: a regular file of exactly 32 bytes that
    /// only its owner may read, as ssh asks of a private key.
    public static func load(from path: String) throws(NetError) -> NodeKey {
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { throw .keyFile(path: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        var status = stat()
        guard fstat(fd, &status) == 0, status.st_mode & S_IFMT == S_IFREG else {
            throw .keyFile(path: path, reason: "not a regular file")
        }
        guard status.st_mode & 0o077 == 0 else {
            throw .keyFile(path: path, reason: "readable by others (mode \(String(status.st_mode & 0o777, radix: 8))); chmod 600 it")
        }
        guard status.st_size == byteCount else {
            throw .keyFile(path: path, reason: "holds \(status.st_size) bytes, a key is \(byteCount) (make one with `poolfs key create`)")
        }
        var bytes = [UInt8](repeating: 0, count: byteCount)
        let read = bytes.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, byteCount) }
        guard read == byteCount else { throw .keyFile(path: path, reason: "could not read its \(byteCount) bytes") }
        return NodeKey(bytes: bytes)
    }

    /// The proof a `role` ("client" or "node") gives over both nonces.
    func proof(_ role: String, challenge: [UInt8], own: [UInt8]) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: Self.signed(role, challenge, own), using: key))
    }

    /// Checks a proof in constant time.
    func accepts(_ proof: [UInt8], from role: String, challenge: [UInt8], own: [UInt8]) -> Bool {
        HMAC<SHA256>.isValidAuthenticationCode(proof, authenticating: Self.signed(role, challenge, own), using: key)
    }

    /// What a proof signs: the role, so that a node's proof never serves
    /// as a client's, then the nonce the other side chose, then its own.
    private static func signed(_ role: String, _ challenge: [UInt8], _ own: [UInt8]) -> [UInt8] {
        Array("poolfs \(role)".utf8) + challenge + own
    }

    static func randomBytes(_ count: Int) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<count).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
    }
}

import CZstd
import Dispatch
import PoolCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A checkpoint image (poolfs checkpoint, poolfs restore), little endian:
///
///     header   "POOLCKPT", version u32, shelves u32, page size u64,
///              taken-at u64, image id u64, base image id u64 (0: none),
///              snapshot name length u32, base path length u32, per shelf
///              (size u64, medium u32), the name's bytes, the base's path,
///              CRC-32C of all before u32
///     chunk    "CHNK" u32, shelf u32, offset u64, raw bytes u32, zstd
///              bytes u32 (`sameAsBase`: none, the base image has these
///              bytes in a chunk at the same place; with `patch` set, the
///              frame holds a patch of the base's chunk there), CRC-32C of
///              the raw bytes u32, CRC-32C of the chunk header before it
///              u32; then the zstd frame
///     patch    (a frame's content) a bitmap of the chunk's 4 KiB pages,
///              `patchMapBytes` long, then the pages it marks, in order:
///              the pages that differ from the base's
///     end      "POOLEND\0", chunks u64, raw bytes u64, CRC-32C of the
///              chunk headers' CRCs in order u32, CRC-32C of the end before it u32
///
/// Each chunk is at most `chunkBytes` of one shelf file, compressed alone:
/// a damaged chunk is found by its checksums, a cut file by its missing end.
enum CheckpointImage {
    static let magic = Array("POOLCKPT".utf8)
    static let endMagic = Array("POOLEND\0".utf8)
    static let chunkMagic: UInt32 = 0x4b4e_4843   // "CHNK"
    /// 2 added patches; a version 1 image is read as before.
    static let version: UInt32 = 2
    static let chunkBytes = 4 << 20
    static let chunkHeaderBytes = 32
    static let endBytes = 32
    static let sameAsBase = UInt32.max
    static let patch: UInt32 = 1 << 31
    static let patchPageBytes = 4096
    static let patchMapBytes = chunkBytes / patchPageBytes / 8

    /// The byte range of page `page` of a chunk of `count` bytes.
    static func patchPage(_ page: Int, of count: Int) -> Range<Int> {
        page * patchPageBytes..<min((page + 1) * patchPageBytes, count)
    }

    static func patchPages(_ count: Int) -> Int { (count + patchPageBytes - 1) / patchPageBytes }

    struct Header {
        var pageSize: UInt64
        var shelves: [(size: UInt64, medium: Medium)]
        /// The snapshot that froze the file system (a mounted pool's), or "".
        var snapshot: String
        var takenAt: UInt64
        var id = UInt64.random(in: 1...UInt64.max)
        /// The image an incremental one names for its unchanged chunks.
        var baseID: UInt64 = 0
        var basePath = ""
    }

    /// 0 dram, 1 pmem, 2 remote (a restore makes it a dram shelf).
    static let media: [Medium] = [.dram, .pmem, .remote]
    static func mediumCode(_ medium: Medium) -> UInt32 { UInt32(media.firstIndex(of: medium) ?? 0) }
}

/// Little-endian fields into bytes.
struct ImageBytes {
    var bytes: [UInt8] = []
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    mutating func crc() { u32(bytes.withUnsafeBytes { CRC32C.checksum($0) }) }
}

/// Fields out of bytes read from an image.
struct ImageFields {
    let bytes: [UInt8]
    var position = 0
    init(_ bytes: [UInt8]) { self.bytes = bytes }
    mutating func u32() -> UInt32 {
        defer { position += 4 }
        return bytes.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: position, as: UInt32.self)) }
    }
    mutating func u64() -> UInt64 {
        defer { position += 8 }
        return bytes.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: position, as: UInt64.self)) }
    }
    /// Whether the CRC-32C at `position` matches the bytes before it.
    func crcMatches() -> Bool {
        bytes.count >= position + 4 && bytes.withUnsafeBytes {
            CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[..<position]))
                == UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: position, as: UInt32.self))
        }
    }
}

/// Why an image is refused: one line naming the file and the cause.
struct ImageRefusal: Error, CustomStringConvertible {
    let description: String
}

/// Writes an image to `path` + ".part", renamed to `path` when whole: a
/// checkpoint cut short leaves no image that looks whole.
final class CheckpointFileWriter {
    let path: String
    private let fd: Int32
    private let context: OpaquePointer
    private let level: Int32
    private var headerCRCs = ImageBytes()
    private(set) var chunks: UInt64 = 0
    private(set) var rawBytes: UInt64 = 0
    private(set) var writtenBytes: UInt64 = 0
    private var compressed: [UInt8]
    private var patch = [UInt8](repeating: 0, count: CheckpointImage.chunkBytes + CheckpointImage.patchMapBytes)

    init(path: String, header: CheckpointImage.Header, level: Int32) throws {
        self.path = path
        self.level = level
        fd = open(path + ".part", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw PoolError.system(call: "open", path: path + ".part", errno: errno) }
        context = ZSTD_createCCtx()
        ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, level)
        compressed = [UInt8](repeating: 0, count: ZSTD_compressBound(CheckpointImage.chunkBytes))
        var bytes = ImageBytes(bytes: CheckpointImage.magic)
        bytes.u32(CheckpointImage.version)
        bytes.u32(UInt32(header.shelves.count))
        bytes.u64(header.pageSize)
        bytes.u64(header.takenAt)
        bytes.u64(header.id)
        bytes.u64(header.baseID)
        let name = Array(header.snapshot.utf8), base = Array(header.basePath.utf8)
        bytes.u32(UInt32(name.count))
        bytes.u32(UInt32(base.count))
        for shelf in header.shelves {
            bytes.u64(shelf.size)
            bytes.u32(CheckpointImage.mediumCode(shelf.medium))
        }
        bytes.bytes += name + base
        bytes.crc()
        try write(bytes.bytes)
    }

    deinit {
        ZSTD_freeCCtx(context)
        if fd >= 0 { close(fd) }
    }

    /// The image an incremental checkpoint compares its chunks with.
    var base: BaseImage?
    private(set) var unchangedBytes: UInt64 = 0

    /// Writes `raw` (bytes at `offset` of shelf `shelf`, which no one
    /// changes meanwhile: what is compressed is what is checksummed) as
    /// chunks; those the base image holds the same are named, not written,
    /// and of those it holds with some pages changed, only those pages.
    func add(shelf: Int, offset: UInt64, _ raw: UnsafeRawBufferPointer, checksum: UInt32? = nil) throws {
        var done = 0
        while done < raw.count {
            let count = min(CheckpointImage.chunkBytes, raw.count - done)
            let piece = UnsafeRawBufferPointer(rebasing: raw[done..<(done + count)])
            let changed = try base?.changedPages(shelf: shelf, offset: offset + UInt64(done), piece)
            let same = changed?.isEmpty == true
            let patched = changed.map { !$0.isEmpty && $0.count < CheckpointImage.patchPages(count) } ?? false
            let size = same ? 0 : compressed.withUnsafeMutableBytes { out in
                guard patched, let changed else {
                    return ZSTD_compress2(context, out.baseAddress, out.count, piece.baseAddress, count)
                }
                return patch.withUnsafeMutableBytes { patch in
                    let length = CheckpointFileWriter.makePatch(piece, changed: changed, into: patch)
                    return ZSTD_compress2(context, out.baseAddress, out.count, patch.baseAddress, length)
                }
            }
            let crc = count == raw.count ? checksum ?? CRC32C.checksum(piece) : CRC32C.checksum(piece)
            guard ZSTD_isError(size) == 0 else {
                throw ImageRefusal(description: "zstd could not compress: \(String(cString: ZSTD_getErrorName(size)))")
            }
            var header = ImageBytes()
            header.u32(CheckpointImage.chunkMagic)
            header.u32(UInt32(shelf))
            header.u64(offset + UInt64(done))
            header.u32(UInt32(count))
            header.u32(same ? CheckpointImage.sameAsBase : UInt32(size) | (patched ? CheckpointImage.patch : 0))
            header.u32(crc)
            header.crc()
            headerCRCs.bytes += header.bytes.suffix(4)
            try write(header.bytes)
            if same {
                unchangedBytes += UInt64(count)
            } else {
                if patched, let changed {
                    unchangedBytes += UInt64(count - changed.reduce(0) { $0 + CheckpointImage.patchPage($1, of: count).count })
                }
                try compressed.withUnsafeBytes { try write(UnsafeRawBufferPointer(rebasing: $0[..<size])) }
            }
            chunks += 1
            rawBytes += UInt64(count)
            done += count
        }
    }

    /// The patch of `piece` whose pages `changed` differ from the base's:
    /// its map, then those pages; its length.
    private static func makePatch(_ piece: UnsafeRawBufferPointer, changed: [Int], into patch: UnsafeMutableRawBufferPointer) -> Int {
        let map = CheckpointImage.patchMapBytes
        patch.baseAddress!.initializeMemory(as: UInt8.self, repeating: 0, count: map)
        var length = map
        for page in changed {
            patch[page / 8] |= UInt8(1 << (page % 8))
            let bytes = CheckpointImage.patchPage(page, of: piece.count)
            UnsafeMutableRawBufferPointer(rebasing: patch[length..<length + bytes.count])
                .copyMemory(from: UnsafeRawBufferPointer(rebasing: piece[bytes]))
            length += bytes.count
        }
        return length
    }

    /// The end marker, then the image made durable and given its name.
    func finish() throws {
        var end = ImageBytes(bytes: CheckpointImage.endMagic)
        end.u64(chunks)
        end.u64(rawBytes)
        end.u32(headerCRCs.bytes.withUnsafeBytes { CRC32C.checksum($0) })
        end.crc()
        try write(end.bytes)
        guard fsync(fd) == 0 else { throw PoolError.system(call: "fsync", path: path, errno: errno) }
        guard rename(path + ".part", path) == 0 else { throw PoolError.system(call: "rename", path: path, errno: errno) }
    }

    /// Leaves no part behind.
    func abandon() { unlink(path + ".part") }

    private func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try write($0) }
    }

    private func write(_ bytes: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
            guard n > 0 else {
                if n < 0 && errno == EINTR { continue }
                throw PoolError.system(call: "write", path: path + ".part", errno: errno)
            }
            done += n
        }
        writtenBytes += UInt64(bytes.count)
    }
}

/// Reads an image, checking every checksum before anything is believed.
final class CheckpointFileReader {
    let path: String
    private let fd: Int32
    private let context: OpaquePointer
    private(set) var header = CheckpointImage.Header(pageSize: 0, shelves: [], snapshot: "", takenAt: 0)

    init(path: String) throws {
        self.path = path
        fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw PoolError.system(call: "open", path: path, errno: errno) }
        context = ZSTD_createDCtx()
        header = try readHeader()
    }

    deinit {
        ZSTD_freeDCtx(context)
        if fd >= 0 { close(fd) }
    }

    private func refuse(_ reason: String) -> ImageRefusal {
        ImageRefusal(description: "\(path) is \(reason); nothing was restored")
    }

    /// Exactly `count` bytes, or nil at the end of the file.
    private func read(_ count: Int) throws -> [UInt8]? {
        var bytes = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let n = bytes.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + done, count - done) }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw PoolError.system(call: "read", path: path, errno: errno) }
            if n == 0 { return done == 0 ? nil : Array(bytes[..<done]) }
            done += n
        }
        return bytes
    }

    private func readHeader() throws -> CheckpointImage.Header {
        let fixedBytes = 56
        guard let fixed = try read(fixedBytes), fixed.count == fixedBytes, Array(fixed[..<8]) == CheckpointImage.magic else {
            throw ImageRefusal(description: "\(path) is not a poolfs checkpoint image")
        }
        var fields = ImageFields(fixed)
        fields.position = 8
        let version = fields.u32(), shelves = Int(fields.u32()), pageSize = fields.u64(), takenAt = fields.u64()
        let id = fields.u64(), baseID = fields.u64()
        let nameLength = Int(fields.u32()), baseLength = Int(fields.u32())
        guard version == 1 || version == CheckpointImage.version else {
            throw ImageRefusal(description: "\(path) is a checkpoint of version \(version); this poolfs reads version \(CheckpointImage.version)")
        }
        guard shelves >= 1, shelves <= 64, nameLength <= 255, baseLength <= 4096 else { throw refuse("damaged: its header is") }
        let restBytes = shelves * 12 + nameLength + baseLength + 4
        guard let rest = try read(restBytes), rest.count == restBytes else { throw refuse("truncated inside its header") }
        var all = ImageFields(fixed + rest)
        all.position = fixed.count + rest.count - 4
        guard all.crcMatches() else { throw refuse("damaged: its header does not match its checksum") }
        all.position = fixedBytes
        var list: [(size: UInt64, medium: Medium)] = []
        for _ in 0..<shelves {
            let size = all.u64(), code = all.u32()
            guard code < CheckpointImage.media.count else { throw refuse("damaged: a shelf's medium is unknown") }
            list.append((size, CheckpointImage.media[Int(code)]))
        }
        let name = String(decoding: rest[(shelves * 12)..<(shelves * 12 + nameLength)], as: UTF8.self)
        let base = String(decoding: rest[(shelves * 12 + nameLength)..<(shelves * 12 + nameLength + baseLength)], as: UTF8.self)
        return CheckpointImage.Header(pageSize: pageSize, shelves: list, snapshot: name, takenAt: takenAt, id: id,
                                      baseID: baseID, basePath: base)
    }

    /// The image this one names for its unchanged chunks (incremental).
    var base: BaseImage?
    private var raw = [UInt8](repeating: 0, count: CheckpointImage.chunkBytes)
    private var patch = [UInt8](repeating: 0, count: CheckpointImage.chunkBytes + CheckpointImage.patchMapBytes)
    private var headerCRCs = ImageBytes()
    private var chunks: UInt64 = 0
    private var rawBytes: UInt64 = 0
    private var ended = false

    /// Each chunk's raw bytes, in order, checked, then the end marker.
    func forEachChunk(_ body: (_ shelf: Int, _ offset: UInt64, _ raw: UnsafeRawBufferPointer) throws -> Void) throws {
        while let (shelf, offset, count) = try next() {
            try raw.withUnsafeBytes { try body(shelf, offset, UnsafeRawBufferPointer(rebasing: $0[..<count])) }
        }
    }

    /// The next chunk, its raw bytes in `chunkBytes(count)`; nil after the
    /// end marker, checked.
    func next() throws -> (shelf: Int, offset: UInt64, count: Int)? {
        guard !ended else { return nil }
        guard let head = try read(CheckpointImage.chunkHeaderBytes) else {
            throw refuse("truncated: it ends after \(chunks) chunks, without its end marker")
        }
        if head.count >= 8, Array(head[..<8]) == CheckpointImage.endMagic {
            guard head.count == CheckpointImage.endBytes else { throw refuse("truncated inside its end marker") }
            var end = ImageFields(head)
            end.position = 8
            let count = end.u64(), bytes = end.u64(), crcs = end.u32()
            end.position = 28
            guard end.crcMatches(), count == chunks, bytes == rawBytes,
                  crcs == headerCRCs.bytes.withUnsafeBytes({ CRC32C.checksum($0) }) else {
                throw refuse("damaged: its end marker does not match its \(chunks) chunks")
            }
            ended = true
            return nil
        }
        guard head.count == CheckpointImage.chunkHeaderBytes else { throw refuse("truncated inside chunk \(chunks)") }
        var fields = ImageFields(head)
        let magic = fields.u32(), shelf = Int(fields.u32()), offset = fields.u64()
        let rawCount = Int(fields.u32()), size = fields.u32(), rawCRC = fields.u32()
        let patched = size != CheckpointImage.sameAsBase && size & CheckpointImage.patch != 0
        let frameBytes = Int(patched ? size & ~CheckpointImage.patch : size)
        guard magic == CheckpointImage.chunkMagic, fields.crcMatches(), rawCount <= CheckpointImage.chunkBytes,
              size == CheckpointImage.sameAsBase || frameBytes <= ZSTD_compressBound(CheckpointImage.chunkBytes) else {
            throw refuse("damaged: chunk \(chunks)'s header does not match its checksum")
        }
        let place = "chunk \(chunks) (shelf \(shelf), offset 0x\(String(offset, radix: 16)))"
        if size == CheckpointImage.sameAsBase || patched {
            guard let base else { throw refuse("incremental, but no base image was read for it") }
            guard try base.copy(shelf: shelf, offset: offset, count: rawCount, into: &raw) else {
                throw ImageRefusal(description: "\(path) names \(place) of its base \(base.path), which has no such chunk; nothing was restored")
            }
        }
        if size != CheckpointImage.sameAsBase {
            guard let frame = try read(frameBytes), frame.count == frameBytes else { throw refuse("truncated inside chunk \(chunks)") }
            let decompress = { (out: UnsafeMutableRawBufferPointer) in
                frame.withUnsafeBytes { ZSTD_decompressDCtx(self.context, out.baseAddress, out.count, $0.baseAddress, frameBytes) }
            }
            let got = patched ? patch.withUnsafeMutableBytes(decompress) : raw.withUnsafeMutableBytes(decompress)
            guard ZSTD_isError(got) == 0, patched ? applyPatch(length: got, count: rawCount) : got == rawCount else {
                throw refuse("damaged: \(place) does not match its checksum")
            }
        }
        guard raw.withUnsafeBytes({ CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[..<rawCount])) }) == rawCRC else {
            throw refuse("damaged: \(place) does not match its checksum")
        }
        headerCRCs.bytes += head.suffix(4)
        chunks += 1
        rawBytes += UInt64(rawCount)
        return (shelf, offset, rawCount)
    }

    /// Lays the pages of the patch just read (`length` bytes) over the
    /// base's chunk in `raw`; false when the patch is not one for `count` bytes.
    private func applyPatch(length: Int, count: Int) -> Bool {
        let map = CheckpointImage.patchMapBytes
        guard length >= map else { return false }
        var at = map
        for page in 0..<CheckpointImage.patchPages(count) where patch[page / 8] & UInt8(1 << (page % 8)) != 0 {
            let bytes = CheckpointImage.patchPage(page, of: count)
            guard at + bytes.count <= length else { return false }
            raw.replaceSubrange(bytes, with: patch[at..<at + bytes.count])
            at += bytes.count
        }
        return at == length
    }

    /// The last chunk's bytes.
    func withChunk<R>(count: Int, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try raw.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[..<count])) }
    }
}

/// An earlier image, read forward alongside a new one (both list chunks by
/// shelf and offset): an incremental checkpoint asks whether it holds the
/// same bytes at a place, a restore takes them from it.
final class BaseImage {
    let reader: CheckpointFileReader
    var path: String { reader.path }
    private var current: (shelf: Int, offset: UInt64, count: Int)?

    /// Opens `path`, whose id must be `id` when given, and its own base.
    init(path: String, id: UInt64? = nil) throws {
        reader = try CheckpointFileReader(path: path)
        if let id, reader.header.id != id {
            throw ImageRefusal(description: "\(path) is not the image this one was made against (another checkpoint has its name)")
        }
        if reader.header.baseID != 0 {
            reader.base = try BaseImage(path: BaseImage.resolve(reader.header.basePath, beside: path), id: reader.header.baseID)
        }
        current = try reader.next()
    }

    /// A base path as stored (relative ones from the image's directory).
    static func resolve(_ base: String, beside image: String) -> String {
        guard !base.hasPrefix("/"), let slash = image.lastIndex(of: "/") else { return base }
        return String(image[...slash]) + base
    }

    /// Moves to the chunk at `shelf`, `offset` of `count` bytes; false when
    /// the base has none there.
    private func seek(_ shelf: Int, _ offset: UInt64, _ count: Int) throws -> Bool {
        while let at = current, (at.shelf, at.offset) < (shelf, offset) { current = try reader.next() }
        guard let at = current else { return false }
        return at.shelf == shelf && at.offset == offset && at.count == count
    }

    /// The 4 KiB pages of `bytes` that differ from the base's chunk at
    /// that place (none: the same bytes); nil when it has no chunk there.
    func changedPages(shelf: Int, offset: UInt64, _ bytes: UnsafeRawBufferPointer) throws -> [Int]? {
        guard try seek(shelf, offset, bytes.count) else { return nil }
        return reader.withChunk(count: bytes.count) { old in
            (0..<CheckpointImage.patchPages(bytes.count)).filter { page in
                let range = CheckpointImage.patchPage(page, of: bytes.count)
                return memcmp(old.baseAddress! + range.lowerBound, bytes.baseAddress! + range.lowerBound, range.count) != 0
            }
        }
    }

    /// The base's bytes at that place into `raw`; false when it has none.
    func copy(shelf: Int, offset: UInt64, count: Int, into raw: inout [UInt8]) throws -> Bool {
        guard try seek(shelf, offset, count) else { return false }
        reader.withChunk(count: count) { bytes in raw.withUnsafeMutableBytes { $0.copyMemory(from: bytes) } }
        return true
    }
}

/// Reads a checkpoint's pieces and checksums them on a thread of its own,
/// a few chunks ahead, while the caller compresses and writes them: the
/// two overlap as tar and zstd do in a pipe.
final class ReadAhead: @unchecked Sendable {
    struct Piece: Sendable {
        let shelf: Int
        let offset: UInt64
        let count: Int
    }

    private let pieces: [Piece]
    private let buffers: [UnsafeMutableRawPointer]
    private let empty: DispatchSemaphore
    private let full = DispatchSemaphore(value: 0)
    private let done = DispatchGroup()
    private let stop = Atomic<Bool>(false)
    private var failure: (any Error)?
    private var checksums: [UInt32]

    init(_ pieces: [Piece], depth: Int = 3) {
        self.pieces = pieces
        buffers = (0..<depth).map { _ in UnsafeMutableRawPointer.allocate(byteCount: CheckpointImage.chunkBytes, alignment: 4096) }
        empty = DispatchSemaphore(value: depth)
        checksums = Array(repeating: 0, count: depth)
    }

    deinit { for buffer in buffers { buffer.deallocate() } }

    /// `body` with each piece's bytes and their CRC-32C, in order; `read`
    /// fills them.
    func forEach(read: @escaping @Sendable (Piece, UnsafeMutableRawBufferPointer) throws -> Void,
                 _ body: (Piece, UnsafeRawBufferPointer, UInt32) throws -> Void) throws {
        DispatchQueue.global().async(group: done) { [self] in
            for (index, piece) in pieces.enumerated() {
                empty.wait()
                if stop.load(ordering: .acquiring) { break }
                do {
                    let buffer = UnsafeMutableRawBufferPointer(start: buffers[index % buffers.count], count: piece.count)
                    try read(piece, buffer)
                    checksums[index % buffers.count] = CRC32C.checksum(UnsafeRawBufferPointer(buffer))
                } catch {
                    failure = error
                    full.signal()
                    break
                }
                full.signal()
            }
        }
        defer {
            stop.store(true, ordering: .releasing)
            for _ in buffers { empty.signal() }
            done.wait()
        }
        for (index, piece) in pieces.enumerated() {
            full.wait()
            if let failure { throw failure }
            try body(piece, UnsafeRawBufferPointer(start: buffers[index % buffers.count], count: piece.count),
                     checksums[index % buffers.count])
            empty.signal()
        }
    }
}

import Foundation
import PoolCore
import PoolNet
#if canImport(Glibc)
import Glibc
#endif

/// The remote part of `poolfs bench remote` seen through a mount: a pool
/// with a remote shelf on the benchmark's node, mounted, a directory placed
/// on the remote shelf and one on a local shelf, the same reads and writes
/// in each (files opened direct: every read is a FUSE request).
struct RemoteMountBenchmark {
    let seconds: Double
    let node: String
    let keyFile: String
    let home: String
    static let sequentialBytes = 128 << 20
    static let randomBytes = 256 << 20
    /// The hot part of the random file, which the cache holds.
    static let hotBytes = 32 << 20

    struct Results {
        var write: [String: Double] = [:], cached: [String: Double] = [:], cold = 0.0
        var random: [String: Double] = [:], hitRate = 0.0
    }

    func run() throws -> Results {
        RemoteShelves.install()
        let pool = try Pool.create(name: "near", size: 512 << 20, pageSize: 64 << 10, at: home)
        try pool.grow(by: 512 << 20) { shelf, bytes in
            try RemoteShelves.reserve(on: node, keyFile: keyFile, poolUUID: pool.uuid, shelf: shelf, bytes: bytes)
        }
        try pool.createHeap(name: "cold").setPlacement(.remote(nil))
        pool.close()
        let mountpoint = home + "/mnt"
        mkdir(mountpoint, 0o755)
        var mount = try mounted(mountpoint, cache: "256M")
        defer { mount.stop() }
        for directory in ["far", "near"] { mkdir(mountpoint + "/" + directory, 0o755) }
        // Glibc's module leaves sys/xattr.h out: the call looked up by name.
        typealias SetAttribute = @convention(c) (UnsafePointer<CChar>, UnsafePointer<CChar>, UnsafeRawPointer, Int, Int32) -> Int32
        let setxattr = unsafeBitCast(dlsym(nil, "setxattr"), to: SetAttribute.self)
        guard setxattr(mountpoint + "/far", "user.poolfs.heap", "cold", 4, 0) == 0 else {
            throw PoolError.system(call: "setxattr user.poolfs.heap", path: mountpoint + "/far", errno: errno)
        }
        var results = Results()
        for place in ["far", "near"] {
            let peer = place == "far" ? "poolfs" : "local shelf"
            results.write[peer] = try sequential(mountpoint + "/\(place)/sequential", bytes: Self.sequentialBytes, write: true)
            results.cached[peer] = try sequential(mountpoint + "/\(place)/sequential", bytes: Self.sequentialBytes, write: false)
            _ = try sequential(mountpoint + "/\(place)/random", bytes: Self.randomBytes, write: true)
        }
        // Cold: the cache forgotten while unmounted, every page from the node.
        mount.stop()
        unlink(home + "/near/shelf-1.cache")
        mount = try mounted(mountpoint, cache: "256M")
        results.cold = try sequential(mountpoint + "/far/sequential", bytes: Self.sequentialBytes, write: false)
        // Random 4 KiB reads, nine in ten in a hot eighth of the file that
        // the cache holds, the rest anywhere: a cache of 64 MiB.
        mount.stop()
        mount = try mounted(mountpoint, cache: "64M")
        try warm(mountpoint + "/far/random")
        let before = try counters(mountpoint)
        results.random["poolfs"] = try randomReads(mountpoint + "/far/random")
        let after = try counters(mountpoint)
        let hits = after.hits - before.hits, misses = after.misses - before.misses
        results.hitRate = hits + misses > 0 ? hits / (hits + misses) : 0
        try warm(mountpoint + "/near/random")
        results.random["local shelf"] = try randomReads(mountpoint + "/near/random")
        return results
    }

    private func mounted(_ mountpoint: String, cache: String) throws -> Server {
        try Server(["mount", "near", mountpoint, "-f", "--path", home, "-o", "remote_cache=\(cache)"], executable: Server.poolfs)
    }

    /// MB/s of 1 MiB writes (then close) or reads of a file of `bytes`.
    private func sequential(_ path: String, bytes: Int, write: Bool) throws -> Double {
        let fd = open(path, write ? O_WRONLY | O_CREAT | O_TRUNC : O_RDONLY, 0o644)
        guard fd >= 0 else { throw PoolError.system(call: "open", path: path, errno: errno) }
        let chunk = 1 << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 0x5a)
        let start = Measure.now()
        var done = 0
        while done < bytes {
            let n = write ? pwrite(fd, buffer.baseAddress, chunk, off_t(done)) : pread(fd, buffer.baseAddress, chunk, off_t(done))
            guard n > 0 else {
                close(fd)
                throw PoolError.system(call: write ? "write" : "read", path: path, errno: n < 0 ? errno : EIO)
            }
            done += n
        }
        // A remote file's last close writes its dirty pages back: timed too.
        guard close(fd) == 0 else { throw PoolError.system(call: "close", path: path, errno: errno) }
        return Double(done) / (Measure.now() - start) / 1e6
    }

    /// Reads the hot part once, so that the cache holds it.
    private func warm(_ path: String) throws {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw PoolError.system(call: "open", path: path, errno: errno) }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        for offset in stride(from: 0, to: Self.hotBytes, by: buffer.count) { _ = pread(fd, &buffer, buffer.count, off_t(offset)) }
    }

    /// 4 KiB reads per second: nine in ten in the first `hotBytes`.
    private func randomReads(_ path: String) throws -> Double {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw PoolError.system(call: "open", path: path, errno: errno) }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 4096)
        var generator = SystemRandomNumberGenerator()
        let start = Measure.now()
        var done = 0
        while Measure.now() - start < seconds {
            for _ in 0..<64 {
                let hot = Int.random(in: 0..<10, using: &generator) < 9
                let block = hot ? Int.random(in: 0..<Self.hotBytes / 4096, using: &generator)
                                : Int.random(in: Self.hotBytes / 4096..<Self.randomBytes / 4096, using: &generator)
                guard pread(fd, &buffer, 4096, off_t(block * 4096)) == 4096 else {
                    throw PoolError.system(call: "pread", path: path, errno: errno)
                }
            }
            done += 64
        }
        return Double(done) / (Measure.now() - start)
    }

    /// The remote shelf's page hits and misses so far, from `.pool/shelves/1`.
    private func counters(_ mountpoint: String) throws -> (hits: Double, misses: Double) {
        let text = try String(contentsOfFile: mountpoint + "/.pool/shelves/1", encoding: .utf8)
        var fields: [String: String] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ", maxSplits: 1)
            if parts.count == 2 { fields[String(parts[0])] = String(parts[1]) }
        }
        return (Double(fields["hits"] ?? "") ?? 0, Double(fields["misses"] ?? "") ?? 0)
    }
}

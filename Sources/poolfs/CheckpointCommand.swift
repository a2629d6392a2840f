import ArgumentParser
import Foundation
import PoolCore
import PoolFS
import PoolNet

struct CheckpointCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "checkpoint",
        abstract: "Write an image of the whole pool to FILE, while it is in use.",
        discussion: """
            The image holds every shelf's metadata and allocated pages: heaps, regions and the \
            file system, compressed with zstd, each chunk with a checksum. On a mounted pool, \
            the file system is frozen first by a snapshot (a pause of milliseconds, said in \
            the output) and the image holds it as it was then, whatever is written \
            meanwhile. Remote shelves' pages are read from their nodes (and the mount's \
            cache, for pages newer there). Then the whole pool is frozen: every process that has it open \
            write-protects its shelves, and the image holds heaps and regions as they were at \
            that instant; a program pauses only on its first write to each page while the \
            image is written. Shelves that are not shared memory (pmem) cannot be frozen: \
            the output says so, and their heaps and regions are copied as they are. \
            `poolfs restore` makes a new pool from the image.
            """)

    @OptionGroup var pool: PoolLocation
    @Argument(help: "The image to write (replaced when the checkpoint is whole).") var file: String
    @Option(help: "zstd's level, 1 (fastest) to 19.") var level: Int32 = 1
    @Option(help: ArgumentHelp("Write only what changed since checkpoint BASE (restoring needs BASE too).", valueName: "BASE"))
    var incremental: String?

    func run() throws {
        guard (1...19).contains(level) else { throw ValidationError("a zstd level is 1 to 19") }
        try pool.withPool { opened in
            let base = try incremental.map { try BaseImage(path: $0) }
            let start = Date()
            var snapshot = ""
            var mountpoint: String?
            do {
                try opened.holdExclusively(for: "checkpointed")
            } catch PoolError.heldExclusively(let name, let use, let pid) {
                guard let mounted = PoolfsMounts.mountpoint(of: opened) else {
                    throw PoolError.heldExclusively(name: name, use: use, pid: pid)
                }
                mountpoint = mounted
                snapshot = FileSystem.checkpointPrefix + "\(getpid())-\(Int(start.timeIntervalSince1970))"
                let paused = Date()
                guard mkdir("\(mounted)/.pool/snapshots/\(snapshot)", 0o700) == 0 else {
                    throw ImageRefusal(description: "could not freeze the file system at \(mounted): \(String(cString: strerror(errno)))")
                }
                print("froze the file system at \(mounted) in \(String(format: "%.1f", Date().timeIntervalSince(paused) * 1000)) ms")
            }
            defer { if let mountpoint { rmdir("\(mountpoint)/.pool/snapshots/\(snapshot)") } }
            let frozenAt = Date()
            let (shelves, unfrozen) = try opened.checkpointShelves()
            defer { opened.thaw() }
            if let unfrozen {
                print("heaps and regions are copied as they are: \(unfrozen)")
            } else {
                print("froze heaps and regions in \(String(format: "%.1f", Date().timeIntervalSince(frozenAt) * 1000)) ms")
            }
            let writer = try CheckpointFileWriter(path: file, header: CheckpointImage.Header(
                pageSize: UInt64(opened.pageSize), shelves: shelves.map { ($0.size, $0.medium) },
                snapshot: snapshot, takenAt: UInt64(start.timeIntervalSince1970), baseID: base?.reader.header.id ?? 0,
                basePath: base.map { URL(fileURLWithPath: $0.path).standardizedFileURL.path } ?? ""), level: level)
            writer.base = base
            do {
                let total = shelves.reduce(UInt64(0)) { $0 + UInt64($1.metadata.count) + $1.runs.reduce(0) { $0 + UInt64($1.count) } }
                let progress = ProgressLine(total: total, what: "checkpoint")
                for shelf in shelves {
                    try shelf.metadata.withUnsafeBytes { try writer.add(shelf: shelf.index, offset: 0, $0) }
                    progress.update(writer.rawBytes)
                    var pieces: [ReadAhead.Piece] = []
                    for run in shelf.runs {
                        for offset in stride(from: run.lowerBound, to: run.upperBound, by: CheckpointImage.chunkBytes) {
                            pieces.append(.init(shelf: shelf.index, offset: offset,
                                                count: Int(min(run.upperBound - offset, UInt64(CheckpointImage.chunkBytes)))))
                        }
                    }
                    nonisolated(unsafe) let pool = opened
                    try ReadAhead(pieces).forEach(read: { piece, buffer in
                        try pool.readShelf(piece.shelf, offset: piece.offset, into: buffer)
                    }) { piece, bytes, checksum in
                        try writer.add(shelf: piece.shelf, offset: piece.offset, bytes, checksum: checksum)
                        progress.update(writer.rawBytes)
                    }
                }
                try writer.finish()
                progress.done()
            } catch {
                writer.abandon()
                throw error
            }
            let seconds = Date().timeIntervalSince(start)
            let unchanged = base == nil ? "" : ", \(ByteSize.format(writer.unchangedBytes)) of them unchanged since \(incremental!)"
            print("wrote \(file): \(ByteSize.format(writer.rawBytes)) of pages in \(ByteSize.format(writer.writtenBytes)) "
                + "(\(writer.chunks) chunks\(unchanged)) in \(String(format: "%.2f", seconds)) s")
        }
    }
}

struct RestoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Make pool NAME from a checkpoint image; a damaged or cut image is refused.",
        discussion: """
            The new pool has the image's page size and shelves (a remote shelf comes back as \
            this machine's memory), the same global addresses, and \
            its heaps, regions and file system as the checkpoint took them (the file system as \
            it was at the checkpoint's start). Every checksum is checked as the image is read; \
            on any failure no pool is left.
            """)

    @Argument(help: "The image `poolfs checkpoint` wrote.") var file: String
    @OptionGroup var pool: PoolLocation

    func run() throws {
        try reportingErrors {
            RemoteShelves.install()
            let reader = try CheckpointFileReader(path: file)
            let header = reader.header
            if header.baseID != 0 {
                // Where it was, or beside this image.
                let stored = header.basePath, beside = BaseImage.resolve(String(stored.split(separator: "/").last ?? ""), beside: file)
                let path = access(stored, F_OK) == 0 ? stored : beside
                guard access(path, R_OK) == 0 else {
                    throw ImageRefusal(description: "\(file) is incremental: its base \(stored) (nor \(beside)) cannot be read; nothing was restored")
                }
                reader.base = try BaseImage(path: path, id: header.baseID)
            }
            try Pool.restore(name: pool.name, at: pool.path, pageSize: header.pageSize, shelves: header.shelves) { target in
                try reader.forEachChunk { shelf, offset, raw in try target.write(shelf: shelf, offset: offset, raw) }
            }
            do {
                let restored = try Pool.open(name: pool.name, at: pool.path)
                defer { restored.close() }
                try restored.holdExclusively(for: "restored")
                if !header.snapshot.isEmpty {
                    try FileSystem(pool: restored, restoringCheckpoint: FileName(header.snapshot)).unmount()
                } else if !restored.rootAddress.isNull {
                    try FileSystem(pool: restored).unmount()
                }
            } catch {
                try? Pool.destroy(name: pool.name, at: pool.path)
                throw error
            }
            for (index, shelf) in header.shelves.enumerated() where shelf.medium == .remote {
                print("shelf \(index) was on a memory node: it is a dram shelf of this machine now")
            }
            print("restored pool '\(pool.name)' from \(file)")
        }
    }
}

/// A progress bar on standard error, drawn only on a terminal.
final class ProgressLine {
    let total: UInt64
    let what: String
    private let shown = isatty(2) != 0
    private var last = -1

    init(total: UInt64, what: String) {
        self.total = max(total, 1)
        self.what = what
    }

    func update(_ done: UInt64) {
        guard shown else { return }
        let percent = Int(min(done, total) * 100 / total)
        guard percent != last else { return }
        last = percent
        let bar = String(repeating: "#", count: percent / 4) + String(repeating: ".", count: 25 - percent / 4)
        FileOutput.standardError.write("\r\(what) [\(bar)] \(percent)% of \(ByteSize.format(total))")
    }

    func done() {
        if shown { FileOutput.standardError.write("\n") }
    }
}

import PoolCore

/// Checkpoints of a mounted pool (poolfs checkpoint): a snapshot named
/// `checkpointPrefix`… freezes the tree while the command copies the pool's
/// pages, and keeps every page the tree named then from being freed or
/// written (writes copy them first). The image holds the log up to that
/// snapshot's record; a restore replays it that far and makes the tree
/// what it was at that instant.
extension FileSystem {
    public static let checkpointPrefix = ".checkpoint-"

    /// Whether a checkpoint is being taken: the log is not rewritten
    /// meanwhile, so the chunks the image copies stay the log's. `tree` held.
    var checkpointing: Bool {
        let prefix = Array(FileSystem.checkpointPrefix.utf8)
        return inodes[FileSystem.snapshotHome]?.directory?.names.contains { $0.0.bytes.starts(with: prefix) } == true
    }

    /// After the replay up to checkpoint `name`: the tree as it was then.
    /// The log starts afresh; the checkpoint's snapshot goes; so do what the
    /// pages past each file's size and unlinked files that were still open
    /// named (the image may not hold them: they could be freed meanwhile).
    /// Then every run of the file system is cut to what is named, each page
    /// counting its names (the image took counts as they were later).
    func recoverCheckpoint(_ name: FileName) throws {
        log.forgetChain()
        _ = dropSnapshot(name)
        for inode in inodes.values where inode.record.nlink == 0 { inodes.removeValue(forKey: inode.number) }
        for inode in inodes.values where inode.isRegular && !FileSystem.isFrozen(inode.number) {
            let kept = (inode.record.size + pageSize - 1) >> pageShift
            _ = inode.extents.removeAll(from: kept)
            _ = inode.extents.cut(at: kept)
            inode.aheadOfSize = false
        }
        freeFound(try unreferencedRuns(recounting: true))
        try compact()
        log.setClean(false)
    }
}

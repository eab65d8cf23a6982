"""The row kernels' block partition: fixed by the shape, balanced across threads, never too fine."""

import numpy as np
import pytest

from fastbn import _config
from fastbn._cpu.driver import _row_blocking


def _block_rows(shape):
    R = shape[0]
    _, rows_per_block, _ = _row_blocking(np.empty(shape, np.float32))
    return [min(rows_per_block, R - r0) for r0 in range(0, R, rows_per_block)]


@pytest.mark.parametrize("shape", [(6272, 256, 1), (100352, 64, 1), (4096, 1024, 1),
                                   (65536, 64, 1)])
def test_many_blocks_come_in_a_multiple_of_eight_of_equal_size(shape):
    # (6272, 256) took 13 blocks of 512 rows before: 7 against 6 on two threads.
    sizes = _block_rows(shape)
    assert len(sizes) % _config.ROW_BLOCKS_MULTIPLE == 0
    assert max(sizes) == min(sizes)


@pytest.mark.parametrize("shape", [(98, 256, 1), (100, 3, 5), (50000, 7, 1)])
def test_a_few_blocks_stay_as_they_are(shape):
    sizes = _block_rows(shape)
    assert len(sizes) < _config.ROW_BLOCKS_MULTIPLE
    assert sum(sizes) == shape[0]


def test_rounding_up_never_makes_blocks_shorter_than_the_minimum():
    # Rows of 20000 take blocks of ROW_BLOCK_MIN_TILES (16) rows: 144 rows make
    # 9 of them; rounded up to 16 blocks they would hold 9 rows each.
    sizes = _block_rows((144, 20000, 1))
    assert sizes == [_config.ROW_BLOCK_MIN_TILES] * 9


@pytest.mark.parametrize("shape", [(6272, 256, 1), (999, 40, 3), (4097, 10, 1)])
def test_blocks_are_whole_output_tiles(shape):
    _, rows_per_block, tile_rows = _row_blocking(np.empty(shape, np.float32))
    assert rows_per_block % tile_rows == 0
    assert sum(_block_rows(shape)) == shape[0]

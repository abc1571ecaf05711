"""CUDA-IPC buckets: the planning and the byte layout (vLLM's packed IPC format), checked on CPU tensors."""

import torch

from rlhf.training.weight_transfer import pack, plan_buckets, unpack


def state():
    g = torch.Generator().manual_seed(0)
    embed = torch.randn(10, 4, generator=g)
    return {"embed.weight": embed, "norm.weight": torch.randn(4, generator=g).to(torch.bfloat16),
            "layer.weight": torch.randn(4, 4, generator=g), "lm_head.weight": embed}  # tied: same storage


def test_buckets_hold_whole_tensors_in_order_and_stay_under_the_size():
    s = state()  # sizes in bytes: 160, 8, 64, 160
    assert plan_buckets(s, 10**6) == [list(s)]
    assert plan_buckets(s, 200) == [["embed.weight", "norm.weight"], ["layer.weight"], ["lm_head.weight"]]
    assert plan_buckets(s, 100) == [["embed.weight"], ["norm.weight", "layer.weight"], ["lm_head.weight"]]  # too big: alone


def test_a_packed_bucket_unpacks_to_the_same_tensors():
    s = state()
    buffer = torch.full((400,), 7, dtype=torch.uint8)  # larger than the bucket: the tail is never read
    for names in plan_buckets(s, 200):
        bucket = pack(s, names, buffer)
        assert bucket["dtype_names"] == [str(s[n].dtype).removeprefix("torch.") for n in names]
        assert sum(bucket["tensor_sizes"]) == sum(s[n].numel() * s[n].element_size() for n in names)
        unpacked = unpack(buffer, bucket)
        assert [name for name, _ in unpacked] == names
        for name, tensor in unpacked:
            assert tensor.dtype == s[name].dtype and torch.equal(tensor, s[name])


def test_the_object_store_arrays_give_back_the_same_tensors():
    from rlhf.training.weight_transfer import from_arrays, to_arrays

    s = state()
    back = from_arrays(to_arrays(s))
    assert list(back) == list(s)
    for name, tensor in back.items():
        assert tensor.dtype == s[name].dtype and torch.equal(tensor, s[name])

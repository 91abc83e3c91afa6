from kintsugi_rt.cli import main

raise SystemExit(main())
